/**
 * A Bridge that took over the lab guest's management NIC (eth0, the one the
 * provider's SSH session and the default route run over) comes back after a
 * real reboot through the host's network stack, and delete gives eth0 back
 * for good (issue 6).
 *
 * - ifupdown: refused before anything changes (the uplink's own stanza in
 *   /etc/network/interfaces would configure eth0 again at boot; kvmnet does
 *   not edit it).
 * - networkd, NetworkManager (switched per run by test/lab/stacks.ts): create
 *   under commit-confirm → reboot → eth0 is a port of the bridge, the bridge
 *   has eth0's address, the default route and the same MAC, configured by the
 *   stack; read shows no drift and still knows what was taken over (the
 *   record in /etc: /run is empty after a reboot); an update changes nothing;
 *   delete moves the address and route back to eth0 (under commit-confirm,
 *   over SSH) and removes every file; after another reboot eth0 is configured
 *   by its own profile again and nothing of ours is left. Then, created
 *   again and rebooted, an update that drops eth0 from `ports` gives it back
 *   the same way, and only the bridge's own files stay.
 *
 * networkd configures eth0 from the host's own file right after the give-back
 * (delete or update): holding our removed port file, it had put eth0 back into
 * the bridge during the give-back (persist/index.ts, withPersistFiles).
 */
import { closeAllConnections } from "../../provider/host";
import { bridgeProvider } from "../../provider/resources/bridge";
import { bootLabHost, LabHost } from "../../testbed/labHost";
import { waitFor } from "./persistSupport";
import { activeStack, eth0Facts, eth0Problems, LAB_ETH0, labStacks, STACK_PATHS, useNetworkStack } from "./stacks";

jest.setTimeout(45 * 60_000);

let lab: LabHost;

beforeAll(async () => {
  lab = await bootLabHost({ extraNics: false });
});

afterAll(async () => {
  closeAllConnections();
  await lab?.shutdown();
});

const conn = () => ({ host: "127.0.0.1", port: lab.port, user: "root", privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint });
const NAME = "br-up";
const ETH0 = `${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`;
/** Every file of ours a stack could read at boot, and our own dir. */
const OURS = "ls -1d /etc/systemd/network/*kvmnet* /etc/NetworkManager/system-connections/*kvmnet* /etc/network/interfaces.d/*kvmnet* /etc/kvmnet /run/kvmnet 2>/dev/null; true";

async function checked(props: Record<string, unknown>) {
  const c = await bridgeProvider.check({}, props);
  expect(c.failures ?? []).toEqual([]);
  return c.inputs;
}

async function uplinkState() {
  const link = (dev: string) =>
    lab.exec(`ip -j -d link show dev ${dev} 2>/dev/null || echo '[]'`).then((r) => JSON.parse(r.stdout)[0] as { address?: string; master?: string } | undefined);
  const v4 = (dev: string) =>
    lab
      .exec(`ip -j -4 addr show dev ${dev} 2>/dev/null || echo '[]'`)
      .then((r) => ((JSON.parse(r.stdout)[0]?.addr_info ?? []) as { local: string; prefixlen: number }[]).map((a) => `${a.local}/${a.prefixlen}`));
  const defaults = JSON.parse((await lab.exec("ip -j -4 route show default")).stdout) as { gateway?: string; dev?: string }[];
  return {
    bridgeMac: (await link(NAME))?.address,
    eth0Master: (await link("eth0"))?.master,
    eth0: await v4("eth0"),
    bridge: await v4(NAME),
    defaults: defaults.map((r) => `${r.gateway} ${r.dev}`),
  };
}

describe("takeOverUplink with persistence", () => {
  it("ifupdown: refused before the host changes, naming the uplink and what to do instead", async () => {
    const before = await uplinkState();
    const inputs = await checked({ connection: conn(), name: NAME, ports: ["eth0"], takeOverUplink: true, persistence: "ifupdown", confirmTimeoutSec: 30 });
    await expect(bridgeProvider.create(inputs)).rejects.toThrow(
      /persistence "ifupdown" of a taken-over uplink \(eth0\) is not supported: the uplink's own stanza in \/etc\/network\/interfaces/,
    );
    expect(await uplinkState()).toEqual(before);
    expect((await lab.exec(OURS)).stdout.trim()).toBe("");
  });

  describe.each(labStacks(["networkd", "networkmanager"]).filter((x) => x !== "ifupdown"))("%s", (stack) => {
    /** The bridge while it exists: a failed run deletes it (giving eth0 back), so the next stack starts clean. */
    let left: { id: string; outs?: Record<string, unknown> } | undefined;
    afterEach(async () => {
      if (left) closeAllConnections(); // the failure may have come after a reboot
      if (left) await bridgeProvider.delete(left.id, left.outs ?? {}).catch((e: Error) => console.log(`cleanup: delete ${NAME}: ${e.message}`));
      left = undefined;
    });

    /** The uplink as `live` once the stack finished after a reboot (it may finish the bridge a moment after sshd answers, over the bridge itself): polled, bounded. */
    async function settledAs(live: Awaited<ReturnType<typeof uplinkState>>) {
      let after = await uplinkState();
      for (let i = 0; i < 60 && JSON.stringify(after) !== JSON.stringify(live); i++) {
        await new Promise((r) => setTimeout(r, 1000));
        after = await uplinkState();
      }
      return after;
    }
    /** The .network systemd-networkd configures eth0 from, once it names the host's own file (polled, bounded: networkd reconfigures after networkctl returned). */
    async function networkdFileOfEth0() {
      const file = async () => (await lab.exec("sed -n 's/^NETWORK_FILE=//p' /run/systemd/netif/links/$(cat /sys/class/net/eth0/ifindex)")).stdout.trim();
      await waitFor("networkd configures eth0 from its own file", 20_000, async () => (await file()) === STACK_PATHS.networkd).catch(() => 0);
      return file();
    }

    it("comes back after a reboot with eth0's address and default route; delete gives them back, also after a reboot", async () => {
      await useNetworkStack(lab, stack);
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
      const inputs = await checked({ connection: conn(), name: NAME, ports: ["eth0"], takeOverUplink: true, persistence: "auto", confirmTimeoutSec: 60 });
      const t0 = Date.now();
      const c = await bridgeProvider.create(inputs);
      left = c;
      console.log(`${stack}: takeover with persistence ${Date.now() - t0} ms`);
      expect(c.outs).toMatchObject({ persistedBy: stack, persistenceDrift: [], takenOver: { eth0: [ETH0] } });
      const live = await uplinkState();
      expect(live).toMatchObject({ eth0Master: NAME, eth0: [], bridge: [ETH0], defaults: [`${LAB_ETH0.gateway} ${NAME}`] });
      // The record of what moved is among the files, and no revert is left armed.
      expect((await lab.exec(`cat /etc/kvmnet/owned/bridge/${NAME}`)).stdout).toContain(`/etc/kvmnet/bridge-${NAME}.takeover.json`);
      expect((await lab.exec("systemctl list-units --all --no-legend 'kvmnet-revert-*'")).stdout.trim()).toBe("");

      const boot = await lab.reboot();
      console.log(`${stack}: reboot ${boot.ms} ms`);
      expect(await settledAs(live)).toEqual(live);
      // ... and it is the stack that configured it.
      // networkd may still say "configuring" with the address and route in place (seen in CI): poll, bounded.
      const configured = stack === "networkd" ? /\bbridge\s+routable\s+configured\b/ : /^100 \(connected\)\nkvmnet-bridge-br-up$/m;
      const stackSays = async () =>
        (await lab.exec(stack === "networkd" ? `networkctl list --no-pager --no-legend ${NAME}` : `nmcli -g GENERAL.STATE,GENERAL.CONNECTION device show ${NAME}`)).stdout;
      await waitFor(`${stack} done with ${NAME}`, 60_000, async () => configured.test(await stackSays())).catch(() => 0);
      expect(await stackSays()).toMatch(configured);
      expect((await lab.exec("ls /run/kvmnet 2>/dev/null; true")).stdout.trim()).toBe("");

      const read = await bridgeProvider.read(c.id, c.outs);
      expect(read.props).toMatchObject({ persistedBy: stack, persistenceDrift: [], takenOver: { eth0: [ETH0] }, macAddress: live.bridgeMac, ports: ["eth0"] });
      expect(await bridgeProvider.diff(c.id, read.props, inputs)).toMatchObject({ changes: false });
      const same = await bridgeProvider.update(c.id, read.props, inputs);
      expect(same.outs).toMatchObject({ persistenceDrift: [] });
      expect(await uplinkState()).toEqual(live);

      // Delete after the reboot: the record says what eth0 gave, so it gets it back.
      const d0 = Date.now();
      const since = (await lab.exec("date '+%Y-%m-%d %H:%M:%S'")).stdout.trim();
      try {
        await bridgeProvider.delete(c.id, same.outs);
        left = undefined;
      } finally {
        console.log(`${stack}: delete (give back, confirmed) ${Date.now() - d0} ms`);
        const unit = stack === "networkmanager" ? "NetworkManager" : "systemd-networkd";
        const j = await lab
          .exec(`journalctl --no-pager -o short-monotonic -u ${unit} --since '${since}' | grep -E 'eth0|br-up' | tail -40`, { allowFail: true })
          .catch((e: Error) => ({ stdout: e.message }));
        console.log(`${unit} during delete:\n${j.stdout}`);
      }
      expect(await uplinkState()).toEqual({ bridgeMac: undefined, eth0Master: undefined, eth0: [ETH0], bridge: [], defaults: [`${LAB_ETH0.gateway} eth0`] });
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
      // networkd let go of eth0 live: it configures eth0 from the host's own file again, not from our
      // removed port file (holding that, it put eth0 back into the bridge during the give-back).
      if (stack === "networkd") expect(await networkdFileOfEth0()).toBe(STACK_PATHS.networkd);

      await lab.reboot();
      let problems: string[] = [];
      for (let i = 0; i < 60; i++) {
        problems = eth0Problems(stack, await eth0Facts(lab), lab.macs.eth0);
        if (problems.length === 0) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      expect(problems).toEqual([]);
      expect((await uplinkState()).bridgeMac).toBeUndefined();
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
    });

    it("after a reboot, an update that drops eth0 from ports gives it back (the stack configures it from its own profile), and the bridge stays", async () => {
      // The stack is the one the test above switched to (and it left nothing of ours).
      expect((await activeStack(lab)).stack).toBe(stack);
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
      const inputs = await checked({ connection: conn(), name: NAME, ports: ["eth0"], takeOverUplink: true, persistence: "auto", confirmTimeoutSec: 60 });
      const c = await bridgeProvider.create(inputs);
      left = c;
      const live = await uplinkState();
      await lab.reboot();
      expect(await settledAs(live)).toEqual(live);
      const read = await bridgeProvider.read(c.id, c.outs);

      const t0 = Date.now();
      const dropped = await checked({ connection: conn(), name: NAME, ports: [], takeOverUplink: true, persistence: "auto", confirmTimeoutSec: 60 });
      // Every change of eth0's master while the update runs: the stack must not take eth0
      // back into the bridge once it left (NetworkManager did, through our port profile,
      // until the profile was gone first; networkd through our port file).
      const mon = (await lab.exec("ip -o monitor link >/run/kvmnet-test-monitor 2>&1 </dev/null & echo $!")).stdout.trim();
      let upd;
      try {
        upd = await bridgeProvider.update(c.id, read.props, dropped);
      } finally {
        await lab.exec(`kill ${Number(mon)}`, { allowFail: true }).catch(() => undefined);
      }
      const masters = (await lab.exec("cat /run/kvmnet-test-monitor; rm -f /run/kvmnet-test-monitor")).stdout
        .split("\n")
        .filter((l) => /^\d+: eth0[:@]/.test(l))
        .map((l) => /\smaster (\S+)/.exec(l)?.[1] ?? "-");
      const released = masters.indexOf("-");
      expect({ released: released >= 0, againInBridge: masters.slice(released + 1).includes(NAME), masters }).toMatchObject({ released: true, againInBridge: false });
      left = { id: c.id, outs: upd.outs };
      console.log(`${stack}: update (give back, confirmed) ${Date.now() - t0} ms`);
      expect(upd.outs).toMatchObject({ ports: [], persistenceDrift: [] });
      expect(upd.outs.takenOver).toEqual({});
      expect(await uplinkState()).toEqual({ bridgeMac: live.bridgeMac, eth0Master: undefined, eth0: [ETH0], bridge: [], defaults: [`${LAB_ETH0.gateway} eth0`] });
      // Only the bridge's own files are left: no port file, no record of a takeover.
      const files = (await lab.exec(OURS)).stdout.trim().split("\n");
      expect(files.filter((f) => /port-eth0|takeover/.test(f))).toEqual([]);
      expect(files.filter((f) => /kvmnet-bridge-br-up[^/]*$/.test(f)).length).toBeGreaterThan(0);
      if (stack === "networkd") expect(await networkdFileOfEth0()).toBe(STACK_PATHS.networkd);
      const again = await bridgeProvider.read(c.id, upd.outs);
      expect(await bridgeProvider.diff(c.id, again.props, dropped)).toMatchObject({ changes: false });

      await bridgeProvider.delete(c.id, again.props);
      left = undefined;
      expect(await uplinkState()).toEqual({ bridgeMac: undefined, eth0Master: undefined, eth0: [ETH0], bridge: [], defaults: [`${LAB_ETH0.gateway} eth0`] });
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
    });
  });
});

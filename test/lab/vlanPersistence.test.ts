/**
 * VlanSubinterface survives a real reboot of the lab guest through each network
 * stack it can run: ifupdown, systemd-networkd, NetworkManager (one VM; the
 * active stack is switched between runs by test/lab/stacks.ts, which reboots).
 *
 * Per stack, the test first acts as the host's admin: it makes a bridge `brp`
 * (203.0.113.1/24) the way that stack does, so the bridge comes back at boot
 * by itself, and for networkd it writes the .network that manages the trunk
 * NIC (networkd creates a VLAN at boot only from its parent's .network).
 * Then, with persistence "auto":
 * - VLAN A (`<lan>.<10+k>`, 802.1ad, 198.51.100.2/24: a dotted name, which
 *   ifupdown's own VLAN support would make 802.1Q) and VLAN B (`vb<20+k>`,
 *   802.1Q, a port of brp);
 *   `persistedBy` is the stack, read shows no drift;
 * - reboot: both are back, a tagged peer in the test's namespace reaches A's
 *   address on A's tag and brp's address on B's tag; read shows no drift;
 * - a hand edit of a persisted file is drift; update repairs it;
 * - refused before anything changes: a bridge the stack does not create at
 *   boot (made by hand), and under networkd a parent networkd does not manage;
 * - delete removes every file; after another reboot into the same stack
 *   nothing of ours is back (the admin's bridge is).
 *
 * The LAN NIC is a tap whose far end is in a namespace this file creates; this
 * machine's kernel has no 802.1Q, so the tagged peer is a raw-socket program
 * (python3, AF_PACKET), as in vlanSubinterface.test.ts. Nothing touches this
 * machine's own interfaces.
 */
import { execFileSync } from "child_process";
import { closeAllConnections } from "../../provider/host";
import { vlanSubinterfaceProvider as vlan } from "../../provider/resources/vlanSubinterface";
import { expectKvmnetError } from "../support/expectError";
import { bootLabHost, checkLabSupport, LabHost } from "../../testbed/labHost";
import { labStacks, NETWORK_STACKS, NetworkStack, useNetworkStack } from "./stacks";
import { labAddrs, labLink, releaseLab, stackDiagnostics, waitFor } from "./persistSupport";
import { runTaggedPeer, taggedOk, taggedSummary } from "./taggedPeer";

jest.setTimeout(40 * 60_000);

const ns = `kvl-vp${process.pid}`;
let lab: LabHost;
let lanIf: string;
let tap: string;
const timings: Record<string, number> = {};

const root = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: "utf8" });

beforeAll(async () => {
  checkLabSupport();
  root("python3", ["-c", "import socket; socket.AF_PACKET"]); // the tagged peer's interpreter: fail loudly, never skip
  root("ip", ["netns", "add", ns]);
  lab = await bootLabHost({ lan: { netns: ns }, extraNics: false });
  timings.bootMs = lab.bootMs;
  tap = lab.lan!.tap;
  const links = JSON.parse((await lab.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
  lanIf = links.find((l) => l.address === lab.macs.lan)!.ifname;
});

afterAll(async () => {
  await releaseLab(lab, ns);
  console.log(`vlan persistence timings (ms): ${JSON.stringify(timings)}`);
});

/** Reboot the guest (the provider's SSH connection dies with the old boot). */
async function reboot(): Promise<number> {
  closeAllConnections();
  return (await lab.reboot()).ms;
}

/**
 * After a reboot SSH answers as soon as eth0 is up; the other links may still
 * be in the stack's hands (networkd and NetworkManager configure links in
 * parallel). Settled: boot jobs done, the admin's bridge brp has its address
 * (the stack has read its configuration), and under networkd the trunk NIC is
 * "configured" (a VLAN netdev is made while its parent is configured).
 */
async function settle(stack: NetworkStack): Promise<number> {
  const t = Date.now();
  await lab.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 180_000 });
  await waitFor("brp has 203.0.113.1/24", 60_000, async () => (await lab.exec("ip -4 -o addr show dev brp 2>/dev/null || true")).stdout.includes("203.0.113.1/24"));
  if (stack === "networkd") {
    await waitFor(`networkd configured ${lanIf}`, 60_000, async () => /\bconfigured\b/.test((await lab.exec(`networkctl list --no-legend ${lanIf} || true`)).stdout));
  }
  return Date.now() - t;
}

const connection = () => ({ host: lab.address, port: lab.port, privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint });

async function checked(props: Record<string, unknown>): Promise<Record<string, unknown>> {
  const c = await vlan.check({}, { connection: connection(), ...props });
  if (c.failures?.length) throw new Error(JSON.stringify(c.failures));
  return c.inputs;
}

const link = (name: string) => labLink(lab, name);
const addrs = (name: string) => labAddrs(lab, name);

/** Every file of ours any stack could read at boot (drop-ins included), and our manifests. */
const OURS = "find /etc/systemd/network /etc/NetworkManager/system-connections /etc/network/interfaces.d -name '*kvmnet*' 2>/dev/null; ls -d /etc/kvmnet 2>/dev/null; true";

function taggedPeer(vid: number, tpid: string, myIp: string, peerIp: string, count = 2) {
  return runTaggedPeer(ns, tap, vid, tpid, myIp, peerIp, count);
}
/** Two echo replies tagged `vid` with TPID `tpid` (hex) from `peerIp`, nothing untagged. */
async function expectTaggedTraffic(vid: number, tpid: "8100" | "88a8", myIp: string, peerIp: string): Promise<void> {
  expect(taggedSummary(await taggedPeer(vid, tpid, myIp, peerIp))).toEqual(taggedOk(vid, tpid));
}

/**
 * The admin's own configuration, per stack: bridge brp (203.0.113.1/24, STP
 * off so a port forwards at once) that the stack itself brings back at boot,
 * and for networkd the .network that manages the trunk NIC. Returns the
 * script that removes it again.
 */
async function adminSetup(stack: NetworkStack): Promise<string> {
  if (stack === "ifupdown") {
    // After the `source interfaces.d/*` line: our VLAN's stanza runs first at boot and must bring brp up itself.
    await lab.exec(
      "cp /etc/network/interfaces /root/interfaces.orig && " +
        "printf '\\nauto brp\\niface brp inet static\\n\\taddress 203.0.113.1/24\\n\\tpre-up ip link add brp type bridge\\n\\tpost-down ip link del brp\\n' >> /etc/network/interfaces && ifup brp",
    );
    return "ifdown brp; mv /root/interfaces.orig /etc/network/interfaces";
  }
  if (stack === "networkd") {
    await lab.exec(
      `printf '[Match]\\nName=${lanIf}\\n\\n[Network]\\nLinkLocalAddressing=no\\n\\n[Link]\\nRequiredForOnline=no\\n' > /etc/systemd/network/10-trunk.network && ` +
        "printf '[NetDev]\\nName=brp\\nKind=bridge\\n' > /etc/systemd/network/10-brp.netdev && " +
        "printf '[Match]\\nName=brp\\n\\n[Network]\\nAddress=203.0.113.1/24\\nConfigureWithoutCarrier=yes\\n' > /etc/systemd/network/10-brp.network && " +
        `networkctl reload && for i in $(seq 100); do [ -e /sys/class/net/brp ] && grep -qs NETWORK_FILE=/etc/systemd/network/10-trunk.network /run/systemd/netif/links/$(cat /sys/class/net/${lanIf}/ifindex) && exit 0; sleep 0.2; done; exit 1`,
    );
    return "rm -rf /etc/systemd/network/10-trunk.network /etc/systemd/network/10-trunk.network.d /etc/systemd/network/10-brp.netdev /etc/systemd/network/10-brp.network; networkctl reload; ip link del brp";
  }
  await lab.exec(
    "nmcli connection add type bridge ifname brp con-name admin-brp bridge.stp no ipv4.method manual ipv4.addresses 203.0.113.1/24 ipv6.method ignore >/dev/null && " +
      'for i in $(seq 100); do [ -n "$(ip -4 -o addr show dev brp 2>/dev/null)" ] && exit 0; sleep 0.2; done; exit 1',
  );
  return "nmcli connection delete admin-brp";
}

// CI: networkd (the stack with the most to refuse); KVMNET_LAB_STACK=all for every
// stack (all three passed; see the README). k keeps names apart between stacks.
describe.each(labStacks(["networkd"]).map((st) => [st, NETWORK_STACKS.indexOf(st)] as const))("VlanSubinterface persisted through %s", (stack, k) => {
  it("comes back after a reboot with its address and bridge, no drift, tagged traffic; edits are drift and repaired; delete leaves nothing, also after a reboot", async () => {
    closeAllConnections();
    const sw = await useNetworkStack(lab, stack);
    timings[`${stack}.switchRebootMs`] = sw.reboot.ms;
    expect((await lab.exec(OURS)).stdout.trim()).toBe("");
    // What the stack could not bring back at boot is refused before anything changes.
    if (stack === "networkd") {
      await expectKvmnetError(
        vlan.create(await checked({ parent: lanIf, vlanId: 99, persistence: "auto" })),
        "Unsupported",
        new RegExp(
          `persistence "auto" \\(networkd, the stack this host runs\\) needs systemd-networkd to manage the parent ${lanIf}[\\s\\S]*hint: write a \\.network file that matches ${lanIf}`,
        ),
      );
      expect(await link(`${lanIf}.99`)).toBeUndefined();
    }
    const nameA = `${lanIf}.${10 + k}`;
    const nameB = `vb${20 + k}`;
    const propsA = { parent: lanIf, vlanId: 10 + k, protocol: "802.1ad", addresses: ["198.51.100.2/24"], persistence: "auto" };
    const propsB = { parent: lanIf, vlanId: 20 + k, name: nameB, bridge: "brp", persistence: "auto" };
    const created: { id: string; outs: Record<string, unknown> }[] = [];
    const undoAdmin = await adminSetup(stack);
    try {
      await lab.exec("ip link add brx type bridge");
      await expectKvmnetError(
        vlan.create(await checked({ parent: lanIf, vlanId: 98, bridge: "brx", persistence: "auto" })),
        "Unsupported",
        /persistence "auto" \(\w+, the stack this host runs\) cannot put \S+ into bridge brx at boot/,
      );
      expect(await link(`${lanIf}.98`)).toBeUndefined();
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
      await lab.exec("ip link del brx");

      const a = await vlan.create(await checked(propsA));
      created.push(a);
      const b = await vlan.create(await checked(propsB));
      created.push(b);
      expect(a.outs).toMatchObject({ name: nameA, persistedBy: stack, persistenceDrift: [], addresses: ["198.51.100.2/24"] });
      expect(b.outs).toMatchObject({ name: nameB, persistedBy: stack, persistenceDrift: [], bridge: "brp" });
      expect((await vlan.read(a.id, a.outs)).props).toEqual(a.outs);
      expect((await vlan.read(b.id, b.outs)).props).toEqual(b.outs);
      const files = (await lab.exec(`cat /etc/kvmnet/owned/vlanSubinterface/${nameA}`)).stdout.trim().split("\n");
      if (stack === "networkmanager") {
        // What NetworkManager made of the live VLANs once it re-read its keyfiles.
        const nm = (await lab.exec(`nmcli -t -f DEVICE,STATE,CONNECTION device; nmcli -t -f NAME,DEVICE connection show --active`)).stdout;
        console.log(`NetworkManager after create:\n${nm}\nin-memory profiles: ${(await lab.exec("ls /run/NetworkManager/system-connections")).stdout}`);
      }
      // Live traffic on both tags before the reboot.
      await expectTaggedTraffic(10 + k, "88a8", "198.51.100.1", "198.51.100.2");
      await expectTaggedTraffic(20 + k, "8100", "203.0.113.9", "203.0.113.1");

      timings[`${stack}.rebootMs`] = await reboot();
      // Both VLANs come back (a few seconds at most after the stack settled).
      try {
        timings[`${stack}.settleMs`] = await settle(stack);
        timings[`${stack}.vlansBackMs`] = await waitFor(
          "both VLANs back",
          30_000,
          async () => (await addrs(nameA).catch(() => [])).length > 0 && (await link(nameB))?.master === "brp",
        );
      } catch (e) {
        throw new Error(`${(e as Error).message}\n${await stackDiagnostics(lab)}`, { cause: e });
      }
      if (stack === "networkmanager") {
        console.log(`NetworkManager after the reboot:\n${(await lab.exec("nmcli -t -f DEVICE,STATE,CONNECTION device")).stdout}`);
      }
      const la = await link(nameA);
      expect(la).toMatchObject({ link: lanIf, linkinfo: { info_kind: "vlan", info_data: { protocol: "802.1ad", id: 10 + k } } });
      expect(la?.flags).toContain("UP");
      expect(await addrs(nameA)).toEqual(["198.51.100.2/24"]);
      expect(await link(nameB)).toMatchObject({ link: lanIf, master: "brp", linkinfo: { info_data: { protocol: "802.1Q", id: 20 + k } } });
      await expectTaggedTraffic(10 + k, "88a8", "198.51.100.1", "198.51.100.2");
      await expectTaggedTraffic(20 + k, "8100", "203.0.113.9", "203.0.113.1");
      const readA = await vlan.read(a.id, a.outs);
      const readB = await vlan.read(b.id, b.outs);
      const inputsOf = (o: Record<string, unknown>) => ({ ...o, ifindex: undefined, operState: undefined });
      expect(inputsOf(readA.props)).toEqual(inputsOf(a.outs));
      expect(inputsOf(readB.props)).toEqual(inputsOf(b.outs));

      // A hand edit of a persisted file is drift; the next update puts it back.
      await lab.exec(`echo '# edited by hand' >> ${files[0]}`);
      const drifted = await vlan.read(a.id, readA.props);
      expect(drifted.props.persistenceDrift).toEqual([`${files[0]} differs from what the inputs render`]);
      expect(drifted.inputs?.persistence).toBe("runtime");
      const news = await checked(propsA);
      expect(await vlan.diff(a.id, drifted.props, news)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
      const repaired = (await vlan.update(a.id, drifted.props, news)).outs;
      expect(repaired).toMatchObject({ persistedBy: stack, persistenceDrift: [], addresses: ["198.51.100.2/24"] });
      expect((await lab.exec(`grep -c 'edited by hand' ${files[0]} || true`)).stdout.trim()).toBe("0");
      expect((await vlan.read(a.id, repaired)).props).toEqual(repaired);
      await expectTaggedTraffic(10 + k, "88a8", "198.51.100.1", "198.51.100.2");

      await vlan.delete(a.id, repaired);
      await vlan.delete(b.id, readB.props);
      created.length = 0;
      expect(await link(nameA)).toBeUndefined();
      expect(await link(nameB)).toBeUndefined();
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
      if (stack === "networkd") {
        // The drop-in directory beside the admin's file held only ours: it goes with it.
        expect((await lab.exec("[ -e /etc/systemd/network/10-trunk.network.d ] && echo left || echo gone")).stdout.trim()).toBe("gone");
        expect((await lab.exec("[ -e /etc/systemd/network/10-trunk.network ] && echo kept || echo gone")).stdout.trim()).toBe("kept");
      }

      // The same stack boots again: the admin's bridge comes back, nothing of ours does.
      timings[`${stack}.afterDeleteRebootMs`] = await reboot();
      await settle(stack);
      expect((await lab.exec(OURS)).stdout.trim()).toBe("");
      expect((await lab.exec("ip -o link show type vlan")).stdout.trim()).toBe("");
      expect(await link("brp")).toMatchObject({ linkinfo: { info_kind: "bridge" } });
    } finally {
      // A failed run leaves nothing for the next stack: our VLANs and files, the admin's setup.
      for (const c of created) await vlan.delete(c.id, c.outs).catch(() => undefined);
      await lab.exec(undoAdmin, { allowFail: true });
    }
  });
});

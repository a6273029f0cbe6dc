/**
 * Commit-confirm on a systemd host (the lab guest), over its management NIC:
 * a Bridge with takeOverUplink moves eth0 — the NIC the provider's SSH session
 * runs over, with the default route — into a bridge; the revert is a transient
 * systemd timer (kvmnet-revert-<token>), disarmed by a confirmation over a new
 * SSH connection. When new sessions are kept out (an nft drop of new SSH
 * connections arriving on the bridge), the timer's service restores the
 * previous state by itself and the provider reports the rollback.
 */
import type { KvmnetError } from "../../provider/errors";
import * as hostModule from "../../provider/host";
import { closeAllConnections } from "../../provider/host";
import { bridgeProvider } from "../../provider/resources/bridge";
import { expectKvmnetError } from "../support/expectError";
import { bootLabHost, LabHost } from "../../testbed/labHost";

jest.setTimeout(15 * 60_000);

let lab: LabHost;

beforeAll(async () => {
  lab = await bootLabHost({ extraNics: false });
});

afterAll(async () => {
  closeAllConnections();
  await lab?.shutdown();
});

const conn = () => ({ host: "127.0.0.1", port: lab.port, user: "root", privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint });

async function create(props: Record<string, unknown>) {
  const checked = await bridgeProvider.check({}, props);
  if (checked.failures?.length) throw new Error(JSON.stringify(checked.failures));
  return bridgeProvider.create(checked.inputs);
}

async function state(): Promise<{ eth0: string[]; br: string[]; defaultDev: string; master?: string; revertUnits: string }> {
  const addrs = async (dev: string) =>
    ((JSON.parse((await lab.exec(`ip -j addr show dev ${dev} 2>/dev/null || echo '[]'`)).stdout)[0]?.addr_info ?? []) as { family: string; local: string; prefixlen: number }[])
      .filter((a) => a.family === "inet")
      .map((a) => `${a.local}/${a.prefixlen}`);
  return {
    eth0: await addrs("eth0"),
    br: await addrs("br-up"),
    defaultDev: JSON.parse((await lab.exec("ip -j -4 route show default")).stdout)[0]?.dev,
    master: JSON.parse((await lab.exec("ip -j link show dev eth0")).stdout)[0]?.master,
    revertUnits: (await lab.exec("systemctl list-units --all --no-legend 'kvmnet-revert-*'")).stdout.trim(),
  };
}

describe("Bridge takeOverUplink on the lab guest's management NIC (systemd)", () => {
  it("moves eth0 with its address and default route into the bridge; a new SSH connection confirms and the timer is gone", async () => {
    const before = await state();
    expect(before).toMatchObject({ eth0: ["10.0.2.15/24"], br: [], defaultDev: "eth0", revertUnits: "" });

    const c = await create({ connection: conn(), name: "br-up", ports: ["eth0"], takeOverUplink: true, confirmTimeoutSec: 30 });
    expect(c.outs.takenOver).toEqual({ eth0: ["10.0.2.15/24"] });
    expect(await state()).toEqual({ eth0: [], br: ["10.0.2.15/24"], defaultDev: "br-up", master: "br-up", revertUnits: "" });
    // The revert really was a systemd timer: its start is in the journal, and it never fired.
    const journal = (await lab.exec("journalctl --no-pager -o cat | grep -E 'kvmnet-revert-[0-9a-f]{12}' || true")).stdout;
    expect(journal).toMatch(/kvmnet-revert-[0-9a-f]{12}/);
    expect((await lab.exec("ls /run/kvmnet/confirm", { allowFail: true })).code).not.toBe(0);

    await bridgeProvider.delete(c.id, c.outs);
    expect(await state()).toEqual(before);
    expect((await lab.exec("ls /run/kvmnet", { allowFail: true })).code).not.toBe(0);
  });

  it("a change that keeps new SSH sessions out is rolled back by the host's timer; SSH answers again and the guest is as before", async () => {
    const before = await state();
    expect(before).toMatchObject({ eth0: ["10.0.2.15/24"], br: [], defaultDev: "eth0", revertUnits: "" });
    expect((await lab.exec("ls /run/kvmnet", { allowFail: true })).code).not.toBe(0);

    // Every confirm attempt goes through dedicatedHostFor: time each one (printed, never asserted).
    const attempts: string[] = [];
    const t0 = Date.now();
    const since = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
    const real = hostModule.dedicatedHostFor;
    const spy = jest.spyOn(hostModule, "dedicatedHostFor").mockImplementation((c) => {
      const h = real(c);
      const run = h.run.bind(h);
      h.run = async (script, opts) => {
        const start = since();
        try {
          const r = await run(script, opts);
          attempts.push(`${start} → ${since()}: ${r.stdout.trim().split("\n").pop()}`);
          return r;
        } catch (e) {
          attempts.push(`${start} → ${since()}: ${(e as Error).message}`);
          throw e;
        }
      };
      return h;
    });

    // New connections arriving over the bridge are dropped; established sessions (the
    // provider's pooled one, the lab's) are not. br-up does not exist yet: the rule bites
    // once the takeover has moved eth0 into it, i.e. after the revert is armed, and stops
    // biting when the revert deletes the bridge. Behind slirp a dropped SYN does not fail
    // the client's connect: slirp accepted it on 127.0.0.1 and keeps re-sending the SYN
    // into the guest, so a confirm attempt opened before the revert may be answered after it.
    await lab.exec(
      "nft add table inet kvmnet_test_lock && " +
        "nft add chain inet kvmnet_test_lock in '{ type filter hook input priority -10; }' && " +
        "nft add rule inet kvmnet_test_lock in iifname br-up tcp dport 22 ct state new counter drop",
    );
    try {
      let err: KvmnetError | undefined;
      try {
        err = (await expectKvmnetError(
          create({ connection: conn(), name: "br-up", ports: ["eth0"], takeOverUplink: true, confirmTimeoutSec: 30 }),
          "Verification",
          /the host rolled the change back: no new SSH connection (confirmed|reached) it within 30s \(the change needed confirming because it moves eth0's addresses and routes onto bridge br-up/,
        )) as KvmnetError;
      } finally {
        const elapsed = since();
        spy.mockRestore();
        const journal = (await lab.exec("journalctl --no-pager -o short-precise --since '-10min' | grep -E 'kvmnet-revert-.*(timer|service)' | tail -8", { allowFail: true }))
          .stdout;
        console.log(
          `create() rejected after ${elapsed} (confirmTimeoutSec 30)\nconfirm attempts:\n  ${attempts.join("\n  ")}\n` +
            `revert log: ${err?.stderr}\n--- guest journal ---\n${journal}`,
        );
      }
      expect(err?.stderr).toMatch(/reverting: no confirmation arrived/);
      // The revert was the systemd timer's service, not the provider.
      expect((await lab.exec("journalctl --no-pager -o cat --since '-10min'")).stdout).toMatch(/Started kvmnet-revert-[0-9a-f]{12}\.service/);
      // SSH answers again: a NEW connection (not the lab's established one) runs a command.
      const fresh = hostModule.dedicatedHostFor(conn());
      try {
        expect((await fresh.run("echo answered")).stdout.trim()).toBe("answered");
      } finally {
        fresh.close();
      }
      // The rule did keep new sessions out while the bridge stood.
      expect((await lab.exec("nft list table inet kvmnet_test_lock")).stdout).toMatch(/counter packets [1-9]\d* bytes \d+ drop/);
    } finally {
      await lab.exec("nft delete table inet kvmnet_test_lock");
    }
    expect((await lab.exec("nft list tables")).stdout).not.toContain("kvmnet_test_lock");
    expect(await state()).toEqual(before);
    expect((await lab.exec("ls /run/kvmnet", { allowFail: true })).code).not.toBe(0);
  });
});

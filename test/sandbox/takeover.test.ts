/**
 * Lockout-safe uplink bridging (commit-confirm) on sandbox hosts, whose SSH
 * session runs over mgmt0 (198.18.x.x/30 from the root namespace): a Bridge
 * with takeOverUplink moves mgmt0 into it — address, routes and all — and
 * a NEW SSH connection confirms; a change that keeps new sessions out is
 * rolled back by the host itself. Sandbox hosts have no systemd, so the
 * revert here is the setsid'd sleeper; the lab tier proves the systemd timer.
 */
import type { KvmnetError } from "../../provider/errors";
import { bridgeProvider } from "../../provider/resources/bridge";
import { oneSandboxHost, sandboxConnection } from "../support/drive";
import { expectKvmnetError } from "../support/expectError";
import { snapshotHost } from "../../testbed/fleet";

const host = oneSandboxHost();

const conn = () => sandboxConnection(host());

async function create(props: Record<string, unknown>) {
  const checked = await bridgeProvider.check({}, props);
  if (checked.failures?.length) throw new Error(JSON.stringify(checked.failures));
  return bridgeProvider.create(checked.inputs);
}

const addrsOf = async (ifname: string) =>
  ((JSON.parse((await host().exec(`ip -j -4 addr show dev ${ifname}`)).stdout)[0]?.addr_info ?? []) as { local: string; prefixlen: number }[]).map(
    (a) => `${a.local}/${a.prefixlen}`,
  );

describe("Bridge takeOverUplink on the interface that carries the SSH session", () => {
  it("moves mgmt0 with its address and routes into the bridge, confirmed over a new connection; delete gives them back", async () => {
    const before = await snapshotHost(host());
    // A static route over mgmt0 shows routes move with the address.
    const peer = host().address.replace(/\d+$/, (d) => String(Number(d) - 1));
    await host().exec(`ip route add 203.0.113.0/24 via ${peer} dev mgmt0`);
    const mgmtMac = JSON.parse((await host().exec("ip -j link show dev mgmt0")).stdout)[0].address;
    const accepted = host().acceptedConnections();

    const c = await create({ connection: conn(), name: "br-up", ports: ["mgmt0"], takeOverUplink: true, confirmTimeoutSec: 30 });
    expect(c.outs.takenOver).toEqual({ mgmt0: [`${host().address}/30`] });
    // The confirming session was a new one: sshd accepted one more than the pooled session.
    expect(host().acceptedConnections() - accepted).toBe(2);
    expect(await addrsOf("br-up")).toEqual([`${host().address}/30`]);
    expect(await addrsOf("mgmt0")).toEqual([]);
    const link = JSON.parse((await host().exec("ip -j link show dev mgmt0")).stdout)[0];
    expect(link.master).toBe("br-up");
    expect(JSON.parse((await host().exec("ip -j link show dev br-up")).stdout)[0].address).toBe(mgmtMac);
    expect((await host().exec("ip route show 203.0.113.0/24")).stdout).toContain("dev br-up");
    // Disarmed: nothing of the revert is left, and no sleeper waits to fire.
    expect((await host().exec("ls /run/kvmnet/confirm", { allowFail: true })).code).not.toBe(0);
    expect((await host().exec("ps -eo args | grep '[/]run/kvmnet/confirm/' || true")).stdout.trim()).toBe("");

    // Read sees no drift; delete moves everything back under commit-confirm.
    const read = await bridgeProvider.read(c.id, c.outs);
    expect(read.inputs?.ports).toEqual(["mgmt0"]);
    await bridgeProvider.delete(c.id, c.outs);
    expect(await addrsOf("mgmt0")).toEqual([`${host().address}/30`]);
    expect((await host().exec("ip route show 203.0.113.0/24")).stdout).toContain("dev mgmt0");
    await host().exec("ip route del 203.0.113.0/24");
    expect(await snapshotHost(host())).toEqual(before);
  });

  it("is refused without takeOverUplink, naming the option, before anything changes", async () => {
    const before = await snapshotHost(host());
    await expectKvmnetError(create({ connection: conn(), name: "br-up", ports: ["mgmt0"] }), "Conflict", /carries the SSH management route[\s\S]*takeOverUplink: true/);
    expect(await snapshotHost(host())).toEqual(before);
  });

  it("a change that keeps new SSH sessions out is rolled back by the host, which answers again", async () => {
    // A static route over mgmt0 must come back too (the revert once brought the bridge
    // down before moving routes back, and a link going down flushes its routes).
    const peer = host().address.replace(/\d+$/, (d) => String(Number(d) - 1));
    await host().exec(`ip route add 203.0.113.0/24 via ${peer} dev mgmt0`);
    const before = await snapshotHost(host());
    // New connections arriving over the bridge are dropped; the pooled session (established) is not.
    await host().exec(
      "nft add table inet kvmnet_test_lock && " +
        "nft add chain inet kvmnet_test_lock in '{ type filter hook input priority -10; }' && " +
        "nft add rule inet kvmnet_test_lock in iifname br-up tcp dport 22 ct state new drop",
    );
    try {
      const err = await expectKvmnetError(
        create({ connection: conn(), name: "br-up", ports: ["mgmt0"], takeOverUplink: true, confirmTimeoutSec: 15 }),
        "Verification",
        /the host rolled the change back: no new SSH connection (confirmed|reached) it within 15s \(the change needed confirming because it moves mgmt0's addresses and routes onto bridge br-up and carries the SSH session's route\)/,
      );
      expect((err as KvmnetError).stderr).toMatch(/reverting: no confirmation arrived/);
      // The hint printed after the host reverted (#14 item 7: every hint is asserted).
      expect((err as KvmnetError).hint).toMatch(
        /^the host is as it was before this operation(; fix what kept new SSH sessions out, or raise confirmTimeoutSec| and answers SSH again)$/,
      );
      // The host reverted by itself: mgmt0 has its address, the bridge is gone, new sessions work.
      expect(await addrsOf("mgmt0")).toEqual([`${host().address}/30`]);
      expect((await host().exec("ip link show dev br-up", { allowFail: true })).code).not.toBe(0);
      expect((await host().exec("ip route show 203.0.113.0/24")).stdout).toContain("dev mgmt0");
    } finally {
      await host().exec("nft delete table inet kvmnet_test_lock");
    }
    // Nothing left: snapshotHost covers every path under /run/kvmnet (a tmpfs of its own here), links, addresses, routes, nft.
    expect(await snapshotHost(host())).toEqual(before);
    await host().exec("ip route del 203.0.113.0/24");
  });
});

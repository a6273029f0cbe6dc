/**
 * examples/bridged-uplink under the real engine, on a sandbox host whose SSH
 * session runs over mgmt0: `pulumi up` moves mgmt0 (address, routes, MAC) into
 * a bridge under commit-confirm and a new connection confirms it; with new SSH
 * sessions kept out, `pulumi up` fails saying the host rolled the change back,
 * and the host is as before; destroy gives the uplink its address back.
 */
import * as path from "path";
import { SandboxHost, snapshotHost } from "../../testbed/fleet";
import { REPO, Stack } from "../../testbed/engine";
import { exampleOnSandboxHost } from "../support/drive";

jest.setTimeout(900_000);

let h: SandboxHost;
let stack: Stack;

exampleOnSandboxHost(
  {
    project: path.join(REPO, "examples", "bridged-uplink"),
    stackName: "engine-bridged-uplink",
    config: { uplink: "mgmt0", bridgeName: "br-lan", confirmTimeoutSec: "15" },
  },
  (host, s) => {
    h = host;
    stack = s;
  },
);

const addrsOf = async (ifname: string) =>
  ((JSON.parse((await h.exec(`ip -j -4 addr show dev ${ifname} 2>/dev/null || echo '[]'`)).stdout)[0]?.addr_info ?? []) as { local: string; prefixlen: number }[]).map(
    (a) => `${a.local}/${a.prefixlen}`,
  );

describe("examples/bridged-uplink under the real engine", () => {
  it("a change that keeps new SSH sessions out is rolled back by the host and `pulumi up` says so", async () => {
    const before = await snapshotHost(h);
    await h.exec(
      "nft add table inet kvmnet_test_lock && " +
        "nft add chain inet kvmnet_test_lock in '{ type filter hook input priority -10; }' && " +
        "nft add rule inet kvmnet_test_lock in iifname br-lan tcp dport 22 ct state new drop",
    );
    try {
      const r = await stack.pulumi(["up", "--yes"]);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toMatch(/the host rolled the change back: no new SSH connection (confirmed|reached) it within 15s/);
      expect(await addrsOf("mgmt0")).toEqual([`${h.address}/30`]);
      expect(await addrsOf("br-lan")).toEqual([]);
    } finally {
      await h.exec("nft delete table inet kvmnet_test_lock");
    }
    expect(await snapshotHost(h)).toEqual(before);
    // Nothing reached the state: the failed create left no resource behind.
    const state = await stack.exportState();
    expect((state.doc.deployment.resources ?? []).filter((r) => r.type.endsWith("kvmnet:Bridge"))).toEqual([]);
  });

  it("moves the uplink into the bridge, is idempotent, and destroy puts it back", async () => {
    const before = await snapshotHost(h);
    const mgmtMac = JSON.parse((await h.exec("ip -j link show dev mgmt0")).stdout)[0].address;
    const accepted = h.acceptedConnections();
    await stack.ok(["up", "--yes"]);
    // The deployment's pooled session, and the new one that confirmed.
    expect(h.acceptedConnections() - accepted).toBe(2);
    expect(await addrsOf("br-lan")).toEqual([`${h.address}/30`]);
    expect(await addrsOf("mgmt0")).toEqual([]);
    const outputs = JSON.parse((await stack.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.takenOver).toEqual({ mgmt0: [`${h.address}/30`] });
    expect(outputs.macAddress).toBe(mgmtMac);

    await stack.ok(["preview", "--expect-no-changes"]);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

    await stack.ok(["destroy", "--yes"]);
    expect(await addrsOf("mgmt0")).toEqual([`${h.address}/30`]);
    expect(await snapshotHost(h)).toEqual(before);
  });
});

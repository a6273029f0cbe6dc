import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { bridgeOutputs } from "../../../../provider/resources/bridge";
import { newBridgeMac, observeBridge, planBridge, planBridgeDelete } from "../../../../provider/resources/bridge/plan";
import { renderBridgePlan } from "../../../../provider/resources/bridge/render";
import { BridgeInputs, bridgeInputsSchema } from "../../../../provider/resources/bridge/schema";
import { verifyBridge } from "../../../../provider/resources/bridge/verify";
import { expectKvmnetThrow, kindAndHint } from "../../../support/expectError";

// Captured from a real namespace: bridge br0 (forward_delay 2 cs) with veth port v1;
// v1p is down and carries 10.9.1.5/24.
const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/bridge-br0-port-v1.txt"), "utf8");
const snap: HostSnapshot = parseSnapshot(fixture, "fixture");
const inputs = (over: Partial<BridgeInputs> & { name: string }): BridgeInputs => bridgeInputsSchema.parse({ connection: { host: "h" }, ...over });

const expectError = expectKvmnetThrow;

describe("observeBridge", () => {
  it("reads the bridge, its options in kernel units, ports and addresses", () => {
    const b = observeBridge(snap, "br0");
    expect(b).toMatchObject({ exists: true, isBridge: true, ports: ["v1"], addresses: ["10.9.0.1/24", "fd00:9::1/64"] });
    expect(b.options).toMatchObject({ stp_state: 0, forward_delay: 2, hello_time: 200, max_age: 2000, ageing_time: 30000, priority: 32768, vlan_filtering: 0 });
    expect(observeBridge(snap, "nope").exists).toBe(false);
    expect(observeBridge(snap, "v1p")).toMatchObject({ exists: true, isBridge: false, kind: "veth" });
  });
});

describe("planBridge", () => {
  it("creates a new bridge with options and mtu, brings it up, then adds addresses", () => {
    const p = planBridge(inputs({ name: "br9", forwardDelay: 4, mtu: 9000, addresses: ["10.1.0.1/24"] }), snap);
    expect(p.guards).toEqual([{ op: "absent", name: "br9" }]);
    expect(p.actions).toEqual([
      { op: "create", name: "br9", options: { stp_state: 0, forward_delay: 400 }, mac: newBridgeMac(inputs({ name: "br9" }), snap) },
      { op: "setMtu", name: "br9", mtu: 9000, previous: undefined },
      { op: "up", name: "br9" },
      { op: "addAddress", name: "br9", cidr: "10.1.0.1/24" },
    ]);
  });

  it("refuses an existing bridge unless adopted, and adopts by changing only what differs", () => {
    expectError(() => planBridge(inputs({ name: "br0" }), snap), "Conflict", /already exists.*\n[\s\S]*adopt: true/);
    const p = planBridge(inputs({ name: "br0", adopt: true, forwardDelay: 15, addresses: ["10.9.0.1/24"], ports: ["v1"] }), snap);
    expect(p.actions).toEqual([{ op: "setOptions", name: "br0", options: { forward_delay: 1500 }, previous: { forward_delay: 2 } }]);
  });

  it("refuses a name taken by a non-bridge", () => {
    expectError(() => planBridge(inputs({ name: "v1p", adopt: true }), snap), "Conflict", /not a bridge \(it is veth\)/);
  });

  it.each([
    ["ghost0", "NotFound", /port ghost0 does not exist/],
    ["v1", "Conflict", /already a port of br0/],
    ["v1p", "Conflict", /has addresses 10\.9\.1\.5\/24/],
    ["br0", "Conflict", /itself a bridge/],
  ])("refuses port %s (%s)", (port, kind, re) => {
    expectError(() => planBridge(inputs({ name: "br9", ports: [port] }), snap), kind, re);
  });

  it("refuses the interface carrying the management route", () => {
    const s = { ...snap, managementInterface: "v1p", addrs: snap.addrs.filter((a) => a.ifname !== "v1p") };
    expectError(() => planBridge(inputs({ name: "br9", ports: ["v1p"] }), s), "Conflict", /SSH management route/);
  });

  it("moves the uplink's routes as ip -j reads them, every attribute through the quoting module, and each one judged", () => {
    const routes = [
      JSON.stringify([
        { dst: "default", gateway: "10.9.1.1", dev: "v1p", protocol: "static", metric: 50, flags: ["onlink"] },
        { dst: "10.9.1.0/24", dev: "v1p", protocol: "kernel", scope: "link", prefsrc: "10.9.1.5", flags: [] },
        { dst: "10.60.0.0/16", dev: "v1p", protocol: "boot", scope: "link", prefsrc: "10.9.1.5", flags: ["linkdown"] },
        { type: "multicast", dst: "ff00::/8", dev: "v1p", protocol: "boot", flags: [] },
      ]),
      "",
      JSON.stringify([
        { dst: "2001:db8:9::/64", dev: "v1p", protocol: "kernel", metric: 256, flags: [], pref: "medium" },
        { dst: "default", gateway: "fe80::1", dev: "v1p", protocol: "ra", metric: 1024, flags: [], pref: "medium" },
        { dst: "2001:db8:77::/48", gateway: "2001:db8:9::1", dev: "v1p", protocol: "static", metric: 1024, flags: [], pref: "medium" },
      ]),
    ].join("\n");
    const s = parseSnapshot(`${fixture}\n@@kvmnet-begin bridge-routes\n${routes}\n@@kvmnet-end bridge-routes 0\n`, "fixture");
    const p = planBridge(inputs({ name: "br9", ports: ["v1p"], takeOverUplink: true }), s);
    const take = p.actions.find((a) => a.op === "takeOver");
    expect(take).toMatchObject({
      routes: [
        { family: "-4", dst: "default", gateway: "10.9.1.1", protocol: "static", metric: 50, onlink: true },
        { family: "-4", dst: "10.60.0.0/16", protocol: "boot", scope: "link", prefsrc: "10.9.1.5" },
        { family: "-6", dst: "2001:db8:77::/48", gateway: "2001:db8:9::1", protocol: "static", metric: 1024, pref: "medium" },
      ],
    });
    const script = renderBridgePlan(p).steps.find((st) => st.description.startsWith("take over v1p"))!;
    expect(script.run.text).toContain(
      "{ kvmnet_rf=0; ip '-4' route replace 'default' 'via' '10.9.1.1' 'onlink' 'proto' 'static' 'metric' 50 dev 'br9' || kvmnet_rf=1\n" +
        "ip '-4' route replace '10.60.0.0/16' 'proto' 'boot' 'scope' 'link' 'src' '10.9.1.5' dev 'br9' || kvmnet_rf=1\n" +
        "ip '-6' route replace '2001:db8:77::/48' 'via' '2001:db8:9::1' 'proto' 'static' 'metric' 1024 'pref' 'medium' dev 'br9' || kvmnet_rf=1; [ \"$kvmnet_rf\" = 0 ]; }",
    );
    // The undo (and the commit-confirm revert) makes the same routes again on the uplink.
    expect(script.undo?.text).toContain("ip '-4' route replace 'default' 'via' '10.9.1.1' 'onlink' 'proto' 'static' 'metric' 50 dev 'v1p' || kvmnet_rf=1");
    expect(script.run.text).not.toMatch(/ip (-4 |-6 )?route show/);
  });

  it("takes over an uplink with takeOverUplink: its MAC, addresses and routes move to the bridge under commit-confirm", () => {
    const s = { ...snap, managementInterface: "v1p" };
    const v1pMac = snap.links.find((l) => l.ifname === "v1p")?.address;
    const p = planBridge(inputs({ name: "br9", ports: ["v1p"], takeOverUplink: true, confirmTimeoutSec: 30 }), s);
    expect(p.actions[0]).toEqual({ op: "create", name: "br9", options: { stp_state: 0 }, mac: v1pMac });
    expect(p.actions).toContainEqual({ op: "takeOver", name: "br9", port: "v1p", addresses: ["10.9.1.5/24"], routes: [], bringUp: true });
    expect(p.actions).toContainEqual({
      op: "writeState",
      name: "br9",
      state: { portsBroughtUp: ["v1p"], takenOver: { v1p: ["10.9.1.5/24"] } },
      previous: { portsBroughtUp: [], takenOver: {} },
    });
    expect(p.confirm).toEqual({ timeoutSec: 30, reason: "it moves v1p's addresses and routes onto bridge br9 and carries the SSH session's route" });

    const step = renderBridgePlan(p).steps.find((x) => x.description.startsWith("take over v1p"));
    expect(step?.run.text).toContain("ip link set dev 'v1p' master 'br9'");
    expect(step?.run.text).toContain("ip addr del '10.9.1.5/24' dev 'v1p' 2>/dev/null; ip addr replace '10.9.1.5/24' dev 'br9'");
    // No routes in this fixture's snapshot: none to make again (the routes test above has them).
    expect(step?.run.text).not.toContain("route");
    // The undo (and so the armed revert) gives everything back.
    expect(step?.undo?.text).toContain("ip link set dev 'v1p' nomaster");
    expect(step?.undo?.text).toContain("ip addr del '10.9.1.5/24' dev 'br9' 2>/dev/null; ip addr replace '10.9.1.5/24' dev 'v1p'");
    // The revert undoes last step first: the routes go back to v1p before the bridge goes
    // down (a link going down flushes its routes, the default route with them).
    const undos = renderBridgePlan(p)
      .steps.filter((x) => x.undo)
      .map((x) => x.description)
      .reverse();
    expect(undos.indexOf("bring br9 up")).toBeGreaterThan(undos.findIndex((d) => d.startsWith("take over v1p")));

    // Without takeOverUplink the same port is refused, pointing at the option.
    expectError(() => planBridge(inputs({ name: "br9", ports: ["v1p"] }), s), "Conflict", /takeOverUplink: true/);
    // A plain bridge away from the management path needs no confirming.
    expect(planBridge(inputs({ name: "br9" }), s).confirm).toBeUndefined();
  });

  it("gives taken-over addresses back on delete and when the port leaves the list, under commit-confirm", () => {
    const taken = {
      ...snap,
      managementInterface: "br0",
      stateFiles: { ...snap.stateFiles, "/run/kvmnet/state/bridge/br0.json": JSON.stringify({ portsBroughtUp: [], takenOver: { v1: ["10.9.0.1/24"] } }) },
    };
    const del = planBridgeDelete("br0", taken, 45);
    expect(del.actions).toEqual([
      { op: "giveBack", name: "br0", port: "v1", addresses: ["10.9.0.1/24"], routes: [], bringDown: false },
      { op: "delete", name: "br0" },
      { op: "removeState", name: "br0" },
    ]);
    expect(del.confirm).toEqual({ timeoutSec: 45, reason: "it moves bridge br0's addresses and routes back to v1 and carries the SSH session's route" });
    const prev = inputs({ name: "br0", ports: ["v1"], takeOverUplink: true });
    const upd = planBridge(inputs({ name: "br0", ports: [], takeOverUplink: true }), taken, prev);
    expect(upd.actions).toContainEqual({ op: "giveBack", name: "br0", port: "v1", addresses: ["10.9.0.1/24"], routes: [], bringDown: false });
    expect(upd.confirm?.reason).toMatch(/back to v1/);
    // Any other change to a bridge that carries the SSH session is confirmed too.
    const mtu = planBridge(inputs({ name: "br0", ports: ["v1"], mtu: 1400, takeOverUplink: true }), taken, prev);
    expect(mtu.confirm).toEqual({ timeoutSec: 60, reason: "bridge br0 carries the SSH session's route" });
  });

  it("removes dropped addresses before adding new ones (an IPv4 primary takes its subnet's secondaries with it)", () => {
    const prev = inputs({ name: "br0", adopt: true, addresses: ["10.9.0.1/24"] });
    const p = planBridge(inputs({ name: "br0", adopt: true, addresses: ["10.9.0.2/24"] }), snap, prev);
    expect(p.actions.filter((a) => a.op.endsWith("Address"))).toEqual([
      { op: "removeAddress", name: "br0", cidr: "10.9.0.1/24" },
      { op: "addAddress", name: "br0", cidr: "10.9.0.2/24" },
    ]);
  });

  it("attaches a down port, bringing it up and remembering that", () => {
    const s = { ...snap, addrs: snap.addrs.filter((a) => a.ifname !== "v1p") };
    const p = planBridge(inputs({ name: "br9", ports: ["v1p"] }), s);
    expect(p.actions).toContainEqual({ op: "attachPort", name: "br9", port: "v1p", bringUp: true });
    expect(p.actions).toContainEqual({ op: "writeState", name: "br9", state: { portsBroughtUp: ["v1p"], takenOver: {} }, previous: { portsBroughtUp: [], takenOver: {} } });
    expect(p.guards).toContainEqual({ op: "portAvailable", name: "br9", port: "v1p" });
  });

  it("on update releases dropped ports and addresses, never foreign ones", () => {
    const prev = inputs({ name: "br0", ports: ["v1"], addresses: ["10.9.0.1/24"] });
    const p = planBridge(inputs({ name: "br0", forwardDelay: 0.02 }), snap, prev);
    expect(p.actions).toEqual([
      { op: "detachPort", name: "br0", port: "v1", bringDown: false },
      { op: "removeAddress", name: "br0", cidr: "10.9.0.1/24" },
    ]);
    // fd00:9::1/64 was never ours: left alone. Nothing left to do when nothing was ours.
    expect(planBridge(inputs({ name: "br0", forwardDelay: 0.02 }), snap, inputs({ name: "br0" })).actions).toEqual([]);
  });
});

describe("planBridgeDelete", () => {
  it("releases every port and deletes the bridge; nothing to do when it is gone", () => {
    expect(planBridgeDelete("br0", snap).actions).toEqual([
      { op: "detachPort", name: "br0", port: "v1", bringDown: false },
      { op: "delete", name: "br0" },
    ]);
    expect(planBridgeDelete("gone", snap).actions).toEqual([]);
  });
});

describe("render", () => {
  it("renders quoted ip commands with undo for each step", () => {
    const plan = renderBridgePlan(planBridge(inputs({ name: "br9", stp: true, forwardDelay: 4, addresses: ["10.1.0.1/24"] }), snap));
    expect(plan.steps.map((s) => s.run.text)).toEqual([
      `ip link add name 'br9' address '${newBridgeMac(inputs({ name: "br9" }), snap)}' type bridge 'stp_state' 1 'forward_delay' 400`,
      "ip link set dev 'br9' up",
      "ip addr add '10.1.0.1/24' dev 'br9'",
    ]);
    expect(plan.steps[0].undo?.text).toBe("ip link del dev 'br9'");
  });
});

describe("verifyBridge", () => {
  it("speaks in nmstate's words", () => {
    const problems = verifyBridge(inputs({ name: "br0", mtu: 9000, forwardDelay: 15, ports: ["v1", "v9"] }), observeBridge(snap, "br0"));
    expect(problems).toEqual([
      "bridge br0 forwardDelay desired 15, current 0.02",
      "bridge br0 mtu desired 9000, current 1500",
      "bridge br0 port v9 desired attached, current not attached",
    ]);
  });
});

describe("newBridgeMac", () => {
  it("is a stable, locally administered unicast MAC per bridge name; an explicit macAddress wins", () => {
    const a = newBridgeMac(inputs({ name: "br9" }), snap);
    expect(a).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    // Second-lowest bit of the first octet: locally administered; lowest: unicast.
    expect(parseInt(a.slice(0, 2), 16) & 0b11).toBe(0b10);
    expect(newBridgeMac(inputs({ name: "br9" }), snap)).toBe(a);
    expect(newBridgeMac(inputs({ name: "br8" }), snap)).not.toBe(a);
    expect(newBridgeMac(inputs({ name: "br9", macAddress: "52:54:00:AA:BB:CC" }), snap)).toBe("52:54:00:aa:bb:cc");
  });

  it("takes the uplink's MAC when it takes the uplink over", () => {
    const uplink = snap.links.find((l) => l.ifname === "v1p");
    expect(newBridgeMac(inputs({ name: "br9", ports: ["v1p"], takeOverUplink: true }), snap)).toBe(uplink?.address);
  });
});

/**
 * #14 item 7: every hint a refused Bridge plan prints, word for word. A bridge
 * its own interrupted create made is taken over by the lifecycle (it passes the
 * inputs as `previous`, proven by the creation record); anything else of that
 * name needs adopt.
 */
describe("planBridge hints", () => {
  it("converges on its own lost create as an update from itself", () => {
    const own = inputs({ name: "br0", forwardDelay: 0.02, ports: ["v1"], addresses: ["10.9.0.1/24", "fd00:9::1/64"] });
    expect(planBridge(own, snap, own).actions).toEqual([]);
  });

  it.each([
    [
      "a bridge of that name",
      inputs({ name: "br0" }),
      snap,
      "Conflict",
      "set adopt: true to manage the existing bridge (its settings become the declared ones), or choose another name",
    ],
    ["an interface of that name", inputs({ name: "v1p", adopt: true }), snap, "Conflict", "choose another name"],
    [
      "a missing port",
      inputs({ name: "br9", ports: ["ghost0"] }),
      snap,
      "NotFound",
      "create the interface first (a VlanSubinterface, a NIC name from `ip link`) or remove it from ports",
    ],
    ["another bridge's port", inputs({ name: "br9", ports: ["v1"] }), snap, "Conflict", "release it first (ip link set dev v1 nomaster) or remove it from ports"],
    ["a bridge as port", inputs({ name: "br9", ports: ["br0"] }), snap, "Conflict", undefined],
    [
      "a port with addresses",
      inputs({ name: "br9", ports: ["v1p"] }),
      snap,
      "Conflict",
      "set takeOverUplink: true to move them onto the bridge, or move them yourself (addresses: [...]) and remove them from v1p first",
    ],
    [
      "the management interface",
      inputs({ name: "br9", ports: ["v1p"] }),
      { ...snap, managementInterface: "v1p", addrs: snap.addrs.filter((a) => a.ifname !== "v1p") },
      "Conflict",
      "set takeOverUplink: true to move its addresses and routes onto the bridge under commit-confirm (the host reverts by itself unless a new SSH connection confirms the change)",
    ],
  ] as const)("refuses %s with the right hint", (_what, desired, s, kind, hint) => {
    expect(kindAndHint(() => planBridge(desired, s))).toEqual({ kind, hint });
  });
});

describe("bridgeOutputs", () => {
  // Found by the persistence matrix: after a reboot the stack made the bridge's ports in
  // another order (a tap before a VLAN), the kernel lists them in ifindex order, and the
  // bridge's attachedInterfaces read as drift.
  it("lists attachedInterfaces in one order whatever order the ports were made in", () => {
    const port = snap.links.find((l) => l.ifname === "v1")!;
    const withPorts = (names: string[]): HostSnapshot => ({
      ...snap,
      links: [...snap.links.filter((l) => l.ifname !== "v1"), ...names.map((ifname, i) => ({ ...port, ifname, ifindex: 10 + i }))],
    });
    const inputs = bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br0" });
    const a = bridgeOutputs(inputs, withPorts(["vmx30", "tapmx", "eth1"]));
    const b = bridgeOutputs(inputs, withPorts(["eth1", "tapmx", "vmx30"]));
    expect(a?.attachedInterfaces).toEqual(["eth1", "tapmx", "vmx30"]);
    expect(b?.attachedInterfaces).toEqual(a?.attachedInterfaces);
  });
});

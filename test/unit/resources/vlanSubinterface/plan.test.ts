import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { vlanOutputs } from "../../../../provider/resources/vlanSubinterface";
import { observeVlan, planVlan, planVlanDelete } from "../../../../provider/resources/vlanSubinterface/plan";
import { renderVlanPlan } from "../../../../provider/resources/vlanSubinterface/render";
import { VlanSubinterfaceInputs, vlanSubinterfaceInputsSchema } from "../../../../provider/resources/vlanSubinterface/schema";
import { verifyVlan } from "../../../../provider/resources/vlanSubinterface/verify";
import { expectKvmnetThrow, kindAndHint } from "../../../support/expectError";

// Captured from the lab VM (Debian 12, kernel 6.1): eth1 (up, mtu 1500) carries
// eth1.10 (802.1Q id 10, a port of bridge br10) and eth1.20 (802.1ad id 20,
// mtu 1400, 198.51.100.2/24, holding eth1 up by its holder file); eth2 is down.
const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/vlan-eth1-v10-v20.txt"), "utf8");
const snap: HostSnapshot = parseSnapshot(fixture, "fixture");
const inputs = (over: Record<string, unknown>): VlanSubinterfaceInputs => vlanSubinterfaceInputsSchema.parse({ connection: { host: "h" }, parent: "eth1", vlanId: 30, ...over });
const withLink = (ifname: string, patch: Record<string, unknown>): HostSnapshot => ({
  ...snap,
  links: snap.links.map((l) => (l.ifname === ifname ? { ...l, ...patch } : l)),
});

const expectError = expectKvmnetThrow;

describe("observeVlan", () => {
  it("reads parent, id, protocol, master, addresses and the parent hold", () => {
    expect(observeVlan(snap, "eth1.10")).toMatchObject({
      exists: true,
      isVlan: true,
      parent: "eth1",
      vlanId: 10,
      protocol: "802.1Q",
      master: "br10",
      addresses: [],
      mtu: 1500,
      adminUp: true,
    });
    expect(observeVlan(snap, "eth1.10").holdsParent).toBeUndefined();
    expect(observeVlan(snap, "eth1.20")).toMatchObject({ parent: "eth1", vlanId: 20, protocol: "802.1ad", mtu: 1400, addresses: ["198.51.100.2/24"], holdsParent: "eth1" });
    expect(observeVlan(snap, "br10")).toMatchObject({ exists: true, isVlan: false, kind: "bridge" });
    expect(observeVlan(snap, "nope")).toMatchObject({ exists: false, isVlan: false });
  });
});

describe("planVlan", () => {
  it("creates: 8021q support, parent and free name checked under the lock; parent held up; VLAN brought up", () => {
    const p = planVlan(inputs({ mtu: 1400, addresses: ["192.0.2.2/24"] }), snap);
    expect(p.guards).toEqual([{ op: "vlanSupport" }, { op: "parentExists", name: "eth1.30", parent: "eth1" }, { op: "absent", name: "eth1.30" }]);
    expect(p.actions).toEqual([
      { op: "create", name: "eth1.30", parent: "eth1", vlanId: 30, protocol: "802.1Q" },
      { op: "holdParent", name: "eth1.30", parent: "eth1" },
      { op: "setMtu", name: "eth1.30", mtu: 1400, previous: undefined },
      { op: "addAddress", name: "eth1.30", cidr: "192.0.2.2/24" },
      { op: "up", name: "eth1.30" },
    ]);
  });

  it("attaches to an existing bridge, checked again under the lock", () => {
    const p = planVlan(inputs({ bridge: "br10" }), snap);
    expect(p.guards).toContainEqual({ op: "bridgeExists", name: "eth1.30", bridge: "br10" });
    expect(p.actions).toContainEqual({ op: "attach", name: "eth1.30", bridge: "br10", previous: undefined });
  });

  it.each([
    [{ parent: "eth9" }, "NotFound", /parent eth9 does not exist on the host/],
    [{ mtu: 1501 }, "InvalidArgument", /mtu 1501 is larger than the mtu of its parent eth1 \(1500\)[\s\S]*hint: raise eth1's mtu first/],
    [{ bridge: "br99" }, "NotFound", /bridge br99 does not exist[\s\S]*hint: create the Bridge first/],
    [{ bridge: "eth2" }, "Conflict", /eth2 is not a bridge \(it is ether\)/],
    [{ name: "br10", vlanId: 10 }, "Conflict", /br10 already exists and is not a VLAN \(it is bridge\)/],
    [{ name: "eth1.20", vlanId: 21, adopt: true }, "Conflict", /eth1\.20 already exists and is VLAN 20 \(802\.1ad\) on eth1, not VLAN 21 \(802\.1Q\) on eth1/],
    [{ name: "v10", vlanId: 10 }, "Conflict", /eth1 already carries VLAN 10 \(802\.1Q\) on eth1 as eth1\.10[\s\S]*name: "eth1\.10", adopt: true/],
    [{ vlanId: 10 }, "Conflict", /eth1\.10 \(VLAN 10 \(802\.1Q\) on eth1\) already exists[\s\S]*adopt: true/],
  ])("refuses %j (%s) before anything changes", (over, kind, re) => {
    expectError(() => planVlan(inputs(over), snap), kind, re);
  });

  it("a tag is per protocol: 802.1ad id 10 may sit beside 802.1Q id 10", () => {
    expect(planVlan(inputs({ name: "v10ad", vlanId: 10, protocol: "802.1ad" }), snap).actions[0]).toEqual({
      op: "create",
      name: "v10ad",
      parent: "eth1",
      vlanId: 10,
      protocol: "802.1ad",
    });
  });

  it("adopts a matching VLAN by changing only what differs", () => {
    expect(planVlan(inputs({ vlanId: 10, adopt: true, bridge: "br10" }), snap)).toEqual({ guards: [{ op: "isVlan", name: "eth1.10" }], actions: [] });
    const p = planVlan(inputs({ vlanId: 20, protocol: "802.1ad", adopt: true, mtu: 1500, addresses: ["198.51.100.2/24", "2001:db8::2/64"] }), snap);
    expect(p.actions).toEqual([
      { op: "setMtu", name: "eth1.20", mtu: 1500, previous: 1400 },
      { op: "addAddress", name: "eth1.20", cidr: "2001:db8::2/64" },
    ]);
  });

  it("on update releases the bridge and addresses dropped from the program, never foreign ones", () => {
    const prev10 = inputs({ vlanId: 10, bridge: "br10" });
    expect(planVlan(inputs({ vlanId: 10 }), snap, prev10).actions).toEqual([{ op: "detach", name: "eth1.10", bridge: "br10" }]);
    // Moving to another bridge is one `master` change (its undo goes back to br10).
    const moved = withLink("eth2", { linkinfo: { info_kind: "bridge" } });
    expect(planVlan(inputs({ vlanId: 10, bridge: "eth2" }), moved, prev10).actions).toEqual([{ op: "attach", name: "eth1.10", bridge: "eth2", previous: "br10" }]);
    const prev20 = inputs({ vlanId: 20, protocol: "802.1ad", addresses: ["198.51.100.2/24"] });
    expect(planVlan(inputs({ vlanId: 20, protocol: "802.1ad" }), snap, prev20).actions).toEqual([{ op: "removeAddress", name: "eth1.20", cidr: "198.51.100.2/24" }]);
    // A new address in the old one's subnet: the old (primary) goes first, or it would take the new one with it.
    expect(planVlan(inputs({ vlanId: 20, protocol: "802.1ad", addresses: ["198.51.100.3/24"] }), snap, prev20).actions).toEqual([
      { op: "removeAddress", name: "eth1.20", cidr: "198.51.100.2/24" },
      { op: "addAddress", name: "eth1.20", cidr: "198.51.100.3/24" },
    ]);
    // Not ours before: left alone.
    expect(planVlan(inputs({ vlanId: 20, protocol: "802.1ad" }), snap, inputs({ vlanId: 20, protocol: "802.1ad" })).actions).toEqual([]);
  });

  it("brings a parent that went down up again, and recreates a VLAN deleted by hand", () => {
    const down = withLink("eth1", { flags: ["BROADCAST", "MULTICAST"] });
    expect(planVlan(inputs({ vlanId: 10, bridge: "br10" }), down, inputs({ vlanId: 10, bridge: "br10" })).actions).toEqual([{ op: "holdParent", name: "eth1.10", parent: "eth1" }]);
    const gone = { ...snap, links: snap.links.filter((l) => l.ifname !== "eth1.10") };
    expect(planVlan(inputs({ vlanId: 10 }), gone, inputs({ vlanId: 10 })).actions.map((a) => a.op)).toEqual(["create", "holdParent", "up"]);
  });
});

describe("planVlanDelete", () => {
  it("deletes our VLAN and releases the parent it holds; someone else's VLAN of that name is left alone", () => {
    expect(planVlanDelete(inputs({ vlanId: 20, protocol: "802.1ad" }), snap).actions).toEqual([
      { op: "delete", name: "eth1.20" },
      { op: "releaseParent", name: "eth1.20", parent: "eth1" },
    ]);
    expect(planVlanDelete(inputs({ vlanId: 10 }), snap).actions).toEqual([{ op: "delete", name: "eth1.10" }]);
    expect(planVlanDelete(inputs({ name: "eth1.10", vlanId: 11 }), snap).actions).toEqual([]);
    // Deleted by hand: only the hold is left to release.
    const gone = { ...snap, links: snap.links.filter((l) => l.ifname !== "eth1.20") };
    expect(planVlanDelete(inputs({ vlanId: 20, protocol: "802.1ad" }), gone).actions).toEqual([{ op: "releaseParent", name: "eth1.20", parent: "eth1" }]);
  });
});

describe("render", () => {
  it("renders quoted ip commands, with undo", () => {
    const plan = renderVlanPlan(planVlan(inputs({ protocol: "802.1ad", bridge: "br10" }), snap));
    expect(plan.steps[0].run.text).toBe("ip link add link 'eth1' name 'eth1.30' type vlan id 30 protocol '802.1ad'");
    expect(plan.steps[0].undo?.text).toBe("ip link del dev 'eth1.30'");
    expect(plan.steps.map((s) => s.description)).toEqual([
      "create eth1.30: VLAN 30 (802.1ad) on eth1",
      "bring parent eth1 up (if down) for eth1.30",
      "attach eth1.30 to bridge br10",
      "bring eth1.30 up",
    ]);
    expect(plan.steps[2].undo?.text).toBe("ip link set dev 'eth1.30' nomaster");
    expect(plan.guards.map((g) => g.kind)).toEqual(["Unsupported", "NotFound", "Conflict", "NotFound"]);
    expect(plan.guards[0].test.text).toBe("[ -d /sys/module/8021q ] || modprobe 8021q");
    expect(plan.guards[0].message).toMatch(/no 802\.1Q VLAN support/);
  });
});

describe("verifyVlan and outputs", () => {
  it("speaks in nmstate's words", () => {
    expect(verifyVlan(inputs({ vlanId: 20, protocol: "802.1ad", mtu: 1500, addresses: ["198.51.100.2/24", "192.0.2.9/24"] }), observeVlan(snap, "eth1.20"))).toEqual([
      "vlanSubinterface eth1.20 mtu desired 1500, current 1400",
      "vlanSubinterface eth1.20 address 192.0.2.9/24 desired present, current absent",
    ]);
    expect(verifyVlan(inputs({ vlanId: 20, protocol: "802.1ad", bridge: "br10" }), observeVlan(snap, "eth1.20"))).toEqual([
      "vlanSubinterface eth1.20 bridge desired br10, current (none)",
    ]);
    expect(verifyVlan(inputs({ name: "eth1.20", vlanId: 21 }), observeVlan(snap, "eth1.20"))).toEqual([
      "vlanSubinterface eth1.20 desired VLAN 21 (802.1Q) on eth1, current VLAN 20 (802.1ad) on eth1",
    ]);
  });

  it("outputs the inputs as the host has them, plus ifindex, MAC and operState", () => {
    const out = vlanOutputs(inputs({ vlanId: 20, protocol: "802.1ad", mtu: 1500, addresses: ["198.51.100.2/24", "192.0.2.9/24"] }), snap);
    expect(out).toMatchObject({
      name: "eth1.20",
      parent: "eth1",
      vlanId: 20,
      protocol: "802.1ad",
      mtu: 1400,
      addresses: ["198.51.100.2/24"],
      macAddress: "52:54:00:6b:76:03",
      operState: "UP",
    });
    expect(typeof out?.ifindex).toBe("number");
    expect(vlanOutputs(inputs({ vlanId: 10, bridge: "br9" }), snap)?.bridge).toBe("br10");
    // Unmanaged mtu and unset bridge are not reported; someone else's VLAN of the name is "gone".
    expect(Object.keys(vlanOutputs(inputs({ vlanId: 10 }), snap) ?? {})).not.toEqual(expect.arrayContaining(["mtu"]));
    expect(vlanOutputs(inputs({ vlanId: 10 }), snap)?.bridge).toBeUndefined();
    expect(vlanOutputs(inputs({ name: "eth1.10", vlanId: 11 }), snap)).toBeUndefined();
  });
});

/**
 * #14 item 7: a create finding its VLAN already there. The lifecycle passes the
 * inputs as `previous` when the creation record proves the VLAN is this
 * resource's (its create's result was lost; this machine has no 802.1Q, so the
 * sandbox cannot run it: this is the plan against the lab's snapshot). Anything
 * else is a Conflict whose hint says what to do, asserted word for word.
 */
describe("a VLAN already on the host at create", () => {
  // eth1.20 as the fixture has it: what its own create made (and the holder file keeping eth1 up).
  const v20 = inputs({ name: "eth1.20", vlanId: 20, protocol: "802.1ad", mtu: 1400, addresses: ["198.51.100.2/24"] });

  it("converges on its own lost create as an update from itself, and delete still lets the parent go", () => {
    expect(planVlan(v20, snap, v20)).toEqual({ guards: [{ op: "isVlan", name: "eth1.20" }], actions: [] });
    expect(planVlanDelete(v20, snap).actions.map((a) => a.op)).toEqual(["delete", "releaseParent"]);
  });

  it("refuses what it cannot prove its own, with hints that say what to set", () => {
    expect(kindAndHint(() => planVlan(v20, snap))).toEqual({
      kind: "Conflict",
      hint: "set adopt: true to manage it (its settings become the declared ones), or choose another name",
    });
    expect(kindAndHint(() => planVlan(inputs({ name: "eth1.20", vlanId: 21 }), snap))).toEqual({ kind: "Conflict", hint: "choose another name, or delete that interface first" });
    expect(kindAndHint(() => planVlan(inputs({ name: "br10", vlanId: 10 }), snap))).toEqual({ kind: "Conflict", hint: "choose another name" });
    expect(kindAndHint(() => planVlan(inputs({ name: "v10", vlanId: 10 }), snap))).toEqual({
      kind: "Conflict",
      hint: 'manage that interface instead (name: "eth1.10", adopt: true), or delete it first',
    });
    expect(planVlan({ ...v20, adopt: true }, snap).actions).toEqual([]);
  });
});

import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { qemuNetdevArgs, tapInterfaceProvider, tapOutputs } from "../../../../provider/resources/tapInterface";
import { persistTap, renderTapIfupdown, renderTapNetworkd, renderTapNetworkManager } from "../../../../provider/resources/tapInterface/persist";
import { observeTap, planTap, planTapDelete, verifyTap } from "../../../../provider/resources/tapInterface/plan";
import { renderTapPlan } from "../../../../provider/resources/tapInterface/render";
import { TapInterfaceInputs, tapInterfaceInputsSchema } from "../../../../provider/resources/tapInterface/schema";
import { HOSTILE_STRINGS } from "../../../../testbed/hostile";
import { expectKvmnetThrow } from "../../../support/expectError";

// Captured in a scratch netns (iproute2 6.1): bridge br0 (up); tap0 (user 1000 =
// "cloudsdk" on this machine, group 100 = "users", vnet_hdr, mtu 1400, port of br0,
// up); tap1 (user 4242, unresolvable, multi_queue, down). Plus the tapOwners section.
const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/tap-br0-tap0-tap1.txt"), "utf8");
const snap: HostSnapshot = parseSnapshot(fixture, "fixture");
const connection = { host: "kvm1" };
const inputs = (over: Record<string, unknown>): TapInterfaceInputs => tapInterfaceInputsSchema.parse({ connection, name: "tap9", ...over });
const failuresFor = async (news: Record<string, unknown>) => (await tapInterfaceProvider.check({}, { connection, name: "tap9", ...news })).failures ?? [];
const scriptOf = (i: TapInterfaceInputs, previous?: TapInterfaceInputs) =>
  renderTapPlan(planTap(i, snap, previous))
    .steps.map((s) => s.run.text)
    .join("\n");

describe("TapInterface check", () => {
  it("fills defaults and normalises owner and group to strings", async () => {
    const r = await tapInterfaceProvider.check({}, { connection, name: "tap9", owner: 1000, group: "kvm" });
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toEqual({
      connection,
      name: "tap9",
      owner: "1000",
      group: "kvm",
      multiQueue: false,
      vnetHdr: false,
      model: "virtio-net-pci",
      adopt: false,
      persistence: "runtime",
    });
  });

  it.each([
    [{ name: "tap-with-a-long-name" }, "name", /15 characters/],
    [{ name: "-x" }, "name", /'-'/],
    [{ owner: "Root" }, "owner", /user name/],
    [{ owner: "a b" }, "owner", /user name/],
    [{ owner: "x;reboot" }, "owner", /user name/],
    [{ owner: -1 }, "owner", /user name|user id/],
    [{ owner: 4294967295 }, "owner", /user id 0–4294967294/],
    [{ owner: 1.5 }, "owner", /user/],
    [{ group: "$(id)" }, "group", /group name/],
    [{ mtu: 67 }, "mtu", /68|small/],
    [{ mtu: 65522 }, "mtu", /65521|big/],
    [{ bridge: "tap9" }, "bridge", /another interface/],
    [{ model: "ne2k_pci" }, "model", /virtio-net-pci/],
    [{ guestMac: "01:00:5e:00:00:01" }, "guestMac", /unicast/],
    [{ queues: 4 }, "queues", /multiQueue/],
    [{ multiQueue: "yes" }, "multiQueue", /boolean/],
    [{ persistence: "systemd" }, "persistence", /runtime/],
    [{ ownr: "qemu" }, "", /ownr|Unrecognized/i],
  ])("refuses %j naming the field", async (over, field, re) => {
    const failures = await failuresFor(over);
    expect(failures.length).toBeGreaterThan(0);
    const f = failures.find((x) => x.property === field || (field === "" && re.test(x.reason)));
    expect(f).toBeDefined();
    expect(f?.reason).toMatch(re);
  });

  it("refuses every hostile string as owner, group, name and bridge", async () => {
    for (const s of HOSTILE_STRINGS) {
      if (/^\d+$/.test(s) || /^[a-z_][a-z0-9_-]{0,31}\$?$/.test(s)) continue;
      for (const field of ["owner", "group"]) expect((await failuresFor({ [field]: s })).map((f) => f.property)).toContain(field);
    }
  });
});

describe("observeTap", () => {
  it("reads the flags, the owner and group by name (ip) and id (sysfs), mtu and bridge", () => {
    expect(observeTap(snap, "tap0")).toMatchObject({
      exists: true,
      isTap: true,
      ownerId: "1000",
      groupId: "100",
      groupName: "users",
      vnetHdr: true,
      multiQueue: false,
      mtu: 1400,
      master: "br0",
      adminUp: true,
    });
    expect(observeTap(snap, "tap1")).toMatchObject({ isTap: true, ownerName: "4242", ownerId: "4242", groupId: "-1", multiQueue: true, vnetHdr: false, adminUp: false });
    expect(observeTap(snap, "br0")).toMatchObject({ exists: true, isTap: false, kind: "bridge" });
  });
});

describe("planTap", () => {
  it("creates with ip tuntap, sets mtu, joins the bridge and brings the tap up; names are checked under the lock", () => {
    const plan = renderTapPlan(planTap(inputs({ owner: "qemu", group: 36, vnetHdr: true, multiQueue: true, mtu: 9000, bridge: "br0" }), snap));
    expect(plan.steps.map((s) => s.run.text)).toEqual([
      "ip tuntap add 'dev' 'tap9' 'mode' 'tap' 'user' 'qemu' 'group' '36' 'vnet_hdr' 'multi_queue'",
      "ip link set dev 'tap9' mtu 9000",
      "ip link set dev 'tap9' master 'br0'",
      "ip link set dev 'tap9' up",
    ]);
    expect(plan.guards.map((g) => g.test.text)).toEqual(
      expect.arrayContaining(["getent passwd 'qemu' >/dev/null", "! ip link show dev 'tap9' >/dev/null 2>&1", "[ -d /sys/class/net/'br0'/bridge ]"]),
    );
    expect(plan.guards.some((g) => /getent group/.test(g.test.text))).toBe(false);
  });

  it("refuses an existing tap without adopt, a non-tap of the name, and a missing or non-bridge bridge", () => {
    expectKvmnetThrow(() => planTap(inputs({ name: "tap0" }), snap), "Conflict", /already exists.*adopt/s);
    expectKvmnetThrow(() => planTap(inputs({ name: "br0" }), snap), "Conflict", /not a tap \(it is bridge\)/);
    expectKvmnetThrow(() => planTap(inputs({ bridge: "br9" }), snap), "NotFound", /bridge br9 does not exist/);
    expectKvmnetThrow(() => planTap(inputs({ bridge: "tap1" }), snap), "Conflict", /tap1 is not a bridge/);
  });

  it("adopts a tap that matches with nothing to do, whether owner is given by id or by the name the host resolves", () => {
    const same = { name: "tap0", group: "users", vnetHdr: true, mtu: 1400, bridge: "br0", adopt: true };
    expect(planTap(inputs({ ...same, owner: 1000 }), snap).actions).toEqual([]);
    expect(planTap(inputs({ ...same, owner: "1000", group: 100 }), snap).actions).toEqual([]);
  });

  it("makes a tap anew when its owner or flags differ (drift or adopt), then restores mtu, bridge and state", () => {
    const prev = inputs({ name: "tap0", owner: 1000, group: 100, vnetHdr: true, bridge: "br0" });
    const plan = planTap(inputs({ name: "tap0", owner: 2000, group: 100, vnetHdr: true, bridge: "br0" }), snap, prev);
    expect(plan.actions.map((a) => a.op)).toEqual(["recreate", "attach", "up"]);
    const step = renderTapPlan(plan).steps[0];
    expect(step.run.text).toBe("ip link del dev 'tap0' && ip tuntap add 'dev' 'tap0' 'mode' 'tap' 'user' '2000' 'group' '100' 'vnet_hdr'");
    expect(step.undo?.text).toContain("ip tuntap add 'dev' 'tap0' 'mode' 'tap' 'user' '1000' 'group' '100' 'vnet_hdr'");
    expect(step.undo?.text).toContain("master 'br0'");
  });

  it("updates mtu and bridge in place, and detaches when bridge is removed", () => {
    const prev = inputs({ name: "tap0", owner: 1000, group: 100, vnetHdr: true, bridge: "br0" });
    expect(scriptOf(inputs({ name: "tap0", owner: 1000, group: 100, vnetHdr: true, bridge: "br0", mtu: 1300 }), prev)).toBe("ip link set dev 'tap0' mtu 1300");
    expect(scriptOf(inputs({ name: "tap0", owner: 1000, group: 100, vnetHdr: true }), prev)).toBe("ip link set dev 'tap0' nomaster");
  });

  it("deletes with ip link del (whatever the flags), and leaves a non-tap of the name alone", () => {
    expect(renderTapPlan(planTapDelete(inputs({ name: "tap1" }), snap)).steps.map((s) => s.run.text)).toEqual(["ip link del dev 'tap1'"]);
    expect(planTapDelete(inputs({ name: "br0" }), snap).actions).toEqual([]);
    expect(planTapDelete(inputs({ name: "gone" }), snap).actions).toEqual([]);
  });
});

describe("verifyTap and outputs", () => {
  it("names each difference, nmstate-style", () => {
    expect(verifyTap(inputs({ name: "tap1", owner: "qemu", multiQueue: false, mtu: 1400 }), observeTap(snap, "tap1"))).toEqual([
      "tapInterface tap1 owner desired qemu, current 4242",
      "tapInterface tap1 multiQueue desired false, current true",
      "tapInterface tap1 mtu desired 1400, current 1500",
      "tapInterface tap1 state desired up, current down",
    ]);
    expect(verifyTap(inputs({ name: "tap0", owner: 1000, group: "users", vnetHdr: true, bridge: "br0" }), observeTap(snap, "tap0"))).toEqual([]);
  });

  it("report the host's owner when it differs (drift), and nothing for a non-tap", () => {
    const out = tapOutputs(inputs({ name: "tap1", owner: 1000, multiQueue: true }), snap);
    expect(out).toMatchObject({ owner: "4242", group: undefined, multiQueue: true, operState: "DOWN" });
    expect(tapOutputs(inputs({ name: "br0" }), snap)).toBeUndefined();
  });
});

describe("qemuNetdevArgs", () => {
  it.each([
    ["virtio-net-pci", "virtio-net-pci,netdev=net-tap9,mac=52:54:00:12:34:56"],
    ["e1000", "e1000,netdev=net-tap9,mac=52:54:00:12:34:56"],
    ["rtl8139", "rtl8139,netdev=net-tap9,mac=52:54:00:12:34:56"],
  ])("gives -netdev and -device for %s", (model, device) => {
    expect(qemuNetdevArgs(inputs({ model, guestMac: "52:54:00:12:34:56" }), "kvm1")).toEqual([
      "-netdev",
      "tap,id=net-tap9,ifname=tap9,script=no,downscript=no,vnet_hdr=off",
      "-device",
      device,
    ]);
  });

  it("matches the tap's flags: vnet_hdr=on, queues and mq for a multi-queue tap", () => {
    expect(qemuNetdevArgs(inputs({ vnetHdr: true, multiQueue: true, queues: 4, guestMac: "52:54:00:12:34:56" }), "kvm1")).toEqual([
      "-netdev",
      "tap,id=net-tap9,ifname=tap9,script=no,downscript=no,vnet_hdr=on,queues=4",
      "-device",
      "virtio-net-pci,netdev=net-tap9,mac=52:54:00:12:34:56,mq=on,vectors=10",
    ]);
  });

  it("gives a stable locally chosen MAC per host and name, and a QEMU id for names starting with a digit", () => {
    const a = qemuNetdevArgs(inputs({}), "kvm1")[3];
    expect(a).toMatch(/mac=52:54:00(:[0-9a-f]{2}){3}$/);
    expect(qemuNetdevArgs(inputs({}), "kvm1")[3]).toBe(a);
    expect(qemuNetdevArgs(inputs({}), "kvm2")[3]).not.toBe(a);
    expect(qemuNetdevArgs(inputs({ name: "9tap" }), "kvm1")[1]).toMatch(/^tap,id=net-n9tap,ifname=9tap,/);
  });
});

describe("TapInterface persistence", () => {
  const full = inputs({ owner: "qemu", group: "kvm", vnetHdr: true, multiQueue: true, mtu: 9000, bridge: "br0", persistence: "auto" });

  it("networkd: a .netdev of Kind=tap with [Tap] settings and a .network that joins the bridge without a carrier", () => {
    const [netdev, network] = renderTapNetworkd(full);
    expect(netdev.path).toBe("/etc/systemd/network/05-kvmnet-tap-tap9.netdev");
    expect(netdev.content).toContain("[NetDev]\nName=tap9\nKind=tap\n\n[Tap]\nUser=qemu\nGroup=kvm\nMultiQueue=yes\nVNetHeader=yes\n");
    // The mtu in the .network's [Link]: a .netdev's MTUBytes= left the tap at 1500 after a reboot (lab).
    expect(netdev.content).not.toContain("MTUBytes");
    expect(network.content).toContain("[Match]\nName=tap9\n\n[Network]\nConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nBridge=br0\n\n[Link]\nMTUBytes=9000\n");
  });

  it("NetworkManager: a tun profile in tap mode, numeric owner and group only", () => {
    const [f] = renderTapNetworkManager(inputs({ owner: 1000, group: 36, vnetHdr: true, bridge: "br0" }));
    expect(f.mode).toBe("0600");
    expect(f.content).toContain("type=tun\ninterface-name=tap9\nautoconnect=true\nmaster=br0\nslave-type=bridge\n");
    expect(f.content).toContain("[tun]\nmode=2\nowner=1000\ngroup=36\nmulti-queue=false\nvnet-hdr=true\npi=false\n");
    expectKvmnetThrow(() => persistTap(full, "networkmanager", snap), "Unsupported", /numeric id only.*qemu/);
  });

  it("ifupdown: a stanza whose pre-up makes the tap with ip tuntap; refused when interfaces.d is not sourced", () => {
    const [f] = renderTapIfupdown(full);
    expect(f.path).toBe("/etc/network/interfaces.d/kvmnet-tap-tap9");
    expect(f.content).toContain("\tpre-up ip tuntap add 'dev' 'tap9' 'mode' 'tap' 'user' 'qemu' 'group' 'kvm' 'vnet_hdr' 'multi_queue'\n");
    expect(f.content).toContain("\tup ip link set dev 'tap9' master 'br0'\n");
    // What versions before the quoting fix wrote reads back as in sync.
    expect(f.accepts).toHaveLength(1);
    expect(f.accepts![0]).toContain("\tpre-up ip tuntap add dev tap9 mode tap user qemu group kvm vnet_hdr multi_queue\n");
    expect(f.accepts![0]).toContain("\tup ip link set dev tap9 master br0\n");
    expectKvmnetThrow(() => persistTap(full, "ifupdown", snap), "Unsupported", /does not source/);
  });
});

/**
 * provider/libvirt.ts and provider/attach.ts: the registration's plan against
 * observed libvirt states, the XML we give libvirt and VMs, and the refusals
 * that must come before anything changes. The same steps run on a real
 * libvirtd in test/lab/libvirt.engine.test.ts.
 */
import * as fs from "fs";
import * as path from "path";
import { bridgeNetdevArgs, libvirtInterfaceXml, xmlLiteral } from "../../provider/attach";
import { KvmnetError } from "../../provider/errors";
import { libvirtNetworkXml, libvirtOutput, libvirtProblems, libvirtSection, libvirtSettings, ownUuid, parseLibvirt, planLibvirt } from "../../provider/libvirt";
import { HostSnapshot, parseSnapshot } from "../../provider/observe";
import { checkWith } from "../../provider/validate";
import { natNetworkInputsSchema } from "../../provider/resources/natNetwork/schema";
import { vlanSubinterfaceInputsSchema } from "../../provider/resources/vlanSubinterface/schema";
import { vlanAttachPoint } from "../../provider/resources/vlanSubinterface";

const FIXTURE = fs.readFileSync(path.join(__dirname, "..", "fixtures", "observe", "bridge-br0-port-v1.txt"), "utf8");
const who = { kind: "natnetwork", name: "default" };
const at = { kind: "bridge", bridge: "virbr0" } as const;
const OURS = ownUuid(who.kind, who.name, "default");
const THEIRS = "5d8e3a4c-1b2f-4e6a-9c0d-7f1e2a3b4c5d";

/** A snapshot whose libvirt-default section says `text`. */
function snapWith(text: string): HostSnapshot {
  return parseSnapshot(`${FIXTURE}\n@@kvmnet-begin libvirt-default\n${text}\n@@kvmnet-end libvirt-default 0\n`, "fixture");
}
/** What the section prints for a network (as virsh 9.0 prints it). */
function network(o: { uuid: string; active: boolean; autostart: boolean; xml: string; backup?: boolean }): string {
  return [
    "daemon yes",
    ...(o.backup ? ["backup yes"] : []),
    "Name:           default",
    `UUID:           ${o.uuid}`,
    `Active:         ${o.active ? "yes" : "no"}`,
    "Persistent:     yes",
    `Autostart:      ${o.autostart ? "yes" : "no"}`,
    "Bridge:         virbr0",
    "",
    "@@xml",
    o.xml,
  ].join("\n");
}
const ourXml = libvirtNetworkXml("default", OURS, at);
const theirXml = `<network>\n  <name>default</name>\n  <uuid>${THEIRS}</uuid>\n  <forward mode='nat'>\n    <nat>\n      <port start='1024' end='65535'/>\n    </nat>\n  </forward>\n  <bridge name='virbr0' stp='on' delay='0'/>\n  <mac address='52:54:00:aa:bb:cc'/>\n  <ip address='192.168.122.1' netmask='255.255.255.0'>\n  </ip>\n</network>`;
const settings = (o: Partial<{ autostart: boolean; adopt: boolean }> = {}) => ({ network: "default", autostart: true, adopt: false, ...o });
const runs = (steps: { run: { text: string } }[]) => steps.map((s) => s.run.text);

function refusal(f: () => unknown): KvmnetError {
  try {
    f();
  } catch (e) {
    if (e instanceof KvmnetError) return e;
    throw e;
  }
  throw new Error("no refusal");
}

describe("the network we define", () => {
  it("is of the host-bridge form on a bridge, and macvtap's on a device that is no bridge", () => {
    expect(ourXml).toBe(`<network>\n  <name>default</name>\n  <uuid>${OURS}</uuid>\n  <forward mode='bridge'/>\n  <bridge name='virbr0'/>\n</network>\n`);
    expect(libvirtNetworkXml("lan10", OURS, { kind: "direct", dev: "eth1.10" })).toContain("  <forward mode='bridge'>\n    <interface dev='eth1.10'/>\n  </forward>\n");
  });
  it("carries a UUID of this resource and network only", () => {
    expect(ownUuid("bridge", "br0", "lan")).toBe(ownUuid("bridge", "br0", "lan"));
    expect(new Set([ownUuid("bridge", "br0", "lan"), ownUuid("bridge", "br1", "lan"), ownUuid("bridge", "br0", "lan2"), ownUuid("natnetwork", "br0", "lan")]).size).toBe(4);
  });
  it("lets no value through that XML would not read literally", () => {
    for (const v of ["a'b", "a<b", "a&b", 'a"b', "a b", ""]) expect(() => xmlLiteral(v)).toThrow(/not XML-literal/);
  });
});

describe("reading libvirt back", () => {
  it("parses net-info and the definition", () => {
    expect(parseLibvirt(network({ uuid: OURS, active: true, autostart: false, xml: ourXml }))).toEqual({
      virsh: true,
      daemon: true,
      backup: false,
      network: { uuid: OURS, active: true, autostart: false, persistent: true, xml: ourXml.trim(), forwardMode: "bridge", bridge: "virbr0", dev: undefined },
    });
    expect(parseLibvirt(network({ uuid: THEIRS, active: false, autostart: true, xml: theirXml, backup: true }))).toMatchObject({
      backup: true,
      network: { forwardMode: "nat", bridge: "virbr0", autostart: true, active: false },
    });
  });
  it("tells a host without virsh from one whose libvirtd does not answer, and an undefined network", () => {
    expect(parseLibvirt("virsh no")).toEqual({ virsh: false, daemon: false, backup: false });
    expect(parseLibvirt("daemon no")).toEqual({ virsh: true, daemon: false, backup: false });
    expect(parseLibvirt("daemon yes")).toEqual({ virsh: true, daemon: true, backup: false });
  });
  it("reads the section as the script prints it (names quoted through sh)", () => {
    const text = libvirtSection("default").text;
    expect(text).toContain("virsh -q -c qemu:///system net-info 'default'");
    expect(text).toContain("@@kvmnet-begin %s\\n' 'libvirt-default'");
  });
});

describe("planning the registration", () => {
  it("defines, starts and marks autostart a network that does not exist, guarded under the lock", () => {
    const p = planLibvirt(who, settings(), at, undefined, snapWith("daemon yes"));
    expect(p.guards).toHaveLength(1);
    expect(p.steps.map((s) => s.description)).toEqual(["define libvirt network default", "start libvirt network default", "turn autostart on for libvirt network default"]);
    expect(runs(p.steps)[0]).toContain("net-define");
    expect(p.steps.every((s) => s.undo)).toBe(true);
  });
  it("does nothing when the network is ours and as wanted", () => {
    expect(planLibvirt(who, settings(), at, settings(), snapWith(network({ uuid: OURS, active: true, autostart: true, xml: ourXml }))).steps).toEqual([]);
  });
  it("repairs what changed out of band: stopped, autostart off, another bridge", () => {
    const stopped = planLibvirt(who, settings(), at, settings(), snapWith(network({ uuid: OURS, active: false, autostart: false, xml: ourXml })));
    expect(stopped.steps.map((s) => s.description)).toEqual(["start libvirt network default", "turn autostart on for libvirt network default"]);
    const moved = planLibvirt(who, settings(), at, settings(), snapWith(network({ uuid: OURS, active: true, autostart: true, xml: ourXml.replace("virbr0", "br9") })));
    expect(moved.steps.map((s) => s.description)).toEqual(["stop libvirt network default", "redefine libvirt network default", "start libvirt network default"]);
  });
  it("refuses a host without libvirt, naming libvirt and what to install, before anything changes", () => {
    for (const text of ["virsh no", "daemon no"]) {
      const e = refusal(() => planLibvirt(who, settings(), at, undefined, snapWith(text)));
      expect(e.kind).toBe("Unsupported");
      expect(e.message).toMatch(/libvirt: natnetwork default asks for libvirt network default/);
      expect(e.hint).toMatch(/libvirt-daemon-system.*nothing was changed/);
    }
  });
  it("never touches a network it did not define unless adopting, and adopts only a stopped one", () => {
    const foreign = snapWith(network({ uuid: THEIRS, active: true, autostart: true, xml: theirXml }));
    expect(refusal(() => planLibvirt(who, settings(), at, undefined, foreign))).toMatchObject({
      kind: "Conflict",
      message: expect.stringMatching(/already exists .* not defined by natnetwork default/),
    });
    expect(refusal(() => planLibvirt(who, settings({ adopt: true }), at, undefined, foreign))).toMatchObject({
      kind: "Conflict",
      hint: expect.stringContaining("virsh net-destroy default"),
    });
    const stopped = snapWith(network({ uuid: THEIRS, active: false, autostart: false, xml: theirXml }));
    const adopt = planLibvirt(who, settings({ adopt: true }), at, undefined, stopped);
    expect(adopt.steps.map((s) => s.description)).toEqual([
      "keep libvirt network default's own definition in /etc/kvmnet/libvirt/default.xml",
      "undefine libvirt network default (adopted)",
      "define libvirt network default",
      "start libvirt network default",
      "turn autostart on for libvirt network default",
    ]);
    // Deleting (or dropping `libvirt`) a foreign network is never ours to do.
    expect(planLibvirt(who, undefined, at, settings(), foreign).steps).toEqual([]);
  });
  it("removes ours, and defines an adopted network's own definition again", () => {
    const p = planLibvirt(who, undefined, at, settings({ adopt: true }), snapWith(network({ uuid: OURS, active: true, autostart: true, xml: ourXml, backup: true })));
    expect(p.steps.map((s) => s.description)).toEqual([
      "stop libvirt network default",
      "undefine libvirt network default",
      "define libvirt network default as it was before it was adopted",
    ]);
    // libvirt gone from the host meanwhile: nothing of ours is left to remove.
    expect(planLibvirt(who, undefined, at, settings(), snapWith("virsh no")).steps).toEqual([]);
    // libvirtd stopped: our network may still be defined, so delete stops before anything changes.
    expect(refusal(() => planLibvirt(who, undefined, at, settings(), snapWith("daemon no")))).toMatchObject({
      kind: "Failed",
      message: expect.stringContaining("must undefine libvirt network default, but the system libvirtd"),
      hint: expect.stringContaining("nothing was changed"),
    });
  });
});

describe("judging the registration", () => {
  it("reports each difference, and the output holds the registration only when it is right", () => {
    expect(libvirtProblems(who, settings(), at, snapWith(network({ uuid: OURS, active: true, autostart: true, xml: ourXml })))).toEqual([]);
    expect(libvirtProblems(who, settings(), at, snapWith("daemon yes"))).toEqual(["libvirt network default is not defined"]);
    expect(libvirtProblems(who, settings(), at, snapWith(network({ uuid: OURS, active: false, autostart: false, xml: ourXml })))).toEqual([
      "libvirt network default is not active",
      "libvirt network default autostart is off, want on",
    ]);
    const snap = snapWith(network({ uuid: OURS, active: true, autostart: false, xml: ourXml }));
    expect(libvirtOutput(who, settings(), at, snap)).toEqual(settings({ autostart: false }));
    expect(libvirtOutput(who, settings(), at, snapWith(network({ uuid: THEIRS, active: true, autostart: true, xml: theirXml })))).toBeUndefined();
  });
});

describe("attach snippets", () => {
  it("name the libvirt network when registered, else the bridge, the device or the tap, with the model", () => {
    expect(libvirtInterfaceXml(at, "virtio-net-pci", "default")).toBe("<interface type='network'>\n  <source network='default'/>\n  <model type='virtio'/>\n</interface>");
    expect(libvirtInterfaceXml(at, "e1000")).toBe("<interface type='bridge'>\n  <source bridge='virbr0'/>\n  <model type='e1000'/>\n</interface>");
    expect(libvirtInterfaceXml({ kind: "direct", dev: "eth1.10" }, "rtl8139")).toBe(
      "<interface type='direct'>\n  <source dev='eth1.10' mode='bridge'/>\n  <model type='rtl8139'/>\n</interface>",
    );
    expect(libvirtInterfaceXml({ kind: "tap", dev: "tap0" }, "virtio-net-pci")).toBe(
      "<interface type='ethernet'>\n  <target dev='tap0' managed='no'/>\n  <model type='virtio'/>\n</interface>",
    );
  });
  it("put a VLAN's guests on its bridge when it is in one, else on the VLAN itself", () => {
    expect(vlanAttachPoint({ name: "eth1.10", bridge: "br10" })).toEqual({ kind: "bridge", bridge: "br10" });
    expect(vlanAttachPoint({ name: "eth1.10" })).toEqual({ kind: "direct", dev: "eth1.10" });
  });
  it("give QEMU a bridge netdev, and nothing for a device QEMU cannot attach to alone", () => {
    expect(bridgeNetdevArgs(at, "e1000")).toEqual(["-netdev", "bridge,id=net-virbr0,br=virbr0", "-device", "e1000,netdev=net-virbr0"]);
    expect(bridgeNetdevArgs({ kind: "bridge", bridge: "0br" }, "virtio-net-pci")).toEqual(["-netdev", "bridge,id=net-n0br,br=0br", "-device", "virtio-net-pci,netdev=net-n0br"]);
    expect(bridgeNetdevArgs({ kind: "direct", dev: "eth1.10" }, "virtio-net-pci")).toEqual([]);
  });
});

describe("checking the inputs", () => {
  it("names the field of a bad libvirt network name or model, before any host is contacted", () => {
    const base = {
      connection: { host: "kvm1.example.net", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbody123456\n-----END OPENSSH PRIVATE KEY-----" },
      parent: "eth1",
      vlanId: 10,
    };
    const bad = checkWith(vlanSubinterfaceInputsSchema, { ...base, libvirt: { network: "a'b" }, model: "ne2k" });
    expect(bad.failures.map((f) => f.property).sort()).toEqual(["libvirt", "model"]);
    expect(bad.failures.find((f) => f.property === "libvirt")?.reason).toMatch(/^libvirt\.network: must be 1–50 characters/);
    expect(bad.failures.find((f) => f.property === "model")?.reason).toMatch(/"virtio-net-pci" \(the default\), "e1000" or "rtl8139"/);
    expect(checkWith(vlanSubinterfaceInputsSchema, { ...base, libvirt: { network: "lan10", extra: 1 } }).failures.map((f) => f.property)).toEqual(["libvirt"]);
    const ok = checkWith(natNetworkInputsSchema, { connection: base.connection, name: "lan", subnet: "10.9.0.0/24", libvirt: { network: "lan" } });
    expect(ok.failures).toEqual([]);
    expect(ok.value).toMatchObject({ libvirt: { network: "lan", autostart: true, adopt: false }, model: "virtio-net-pci" });
    expect(libvirtSettings.safeParse({ network: "-x" }).success).toBe(false);
  });
});

import { vlanSubinterfaceProvider } from "../../../../provider/resources/vlanSubinterface";
import { UNKNOWN } from "../../../../provider/validate";
import { HOSTILE_STRINGS } from "../../../../testbed/hostile";

const connection = { host: "kvm1.example.net", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbody123456\n-----END OPENSSH PRIVATE KEY-----" };
const base = { connection, parent: "eth1", vlanId: 10 };

async function failuresFor(news: Record<string, unknown>) {
  return (await vlanSubinterfaceProvider.check({}, news)).failures ?? [];
}

describe("VlanSubinterface check", () => {
  it("fills defaults, including the name <parent>.<vid>", async () => {
    const r = await vlanSubinterfaceProvider.check({}, { ...base, __provider: "serialized" });
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toEqual({ ...base, name: "eth1.10", protocol: "802.1Q", addresses: [], adopt: false, persistence: "runtime", model: "virtio-net-pci" });
  });

  it("keeps a given name and protocol, and normalises addresses", async () => {
    const r = await vlanSubinterfaceProvider.check({}, { ...base, name: "v10", protocol: "802.1ad", addresses: ["FD00:0::1/64"] });
    expect(r.inputs).toMatchObject({ name: "v10", protocol: "802.1ad", addresses: ["fd00::1/64"] });
  });

  it("asks for a name when the default is over 15 characters, naming `name`", async () => {
    const failures = await failuresFor({ ...base, parent: "enp129s0f1np1", vlanId: 4000 });
    expect(failures).toEqual([{ property: "name", reason: expect.stringMatching(/^name: is required here: the default "enp129s0f1np1\.4000" is over 15 characters/) }]);
    expect(await failuresFor({ ...base, parent: "enp129s0f1np1", vlanId: 4000, name: "uplink.4000" })).toEqual([]);
    // Exactly 15 is fine.
    expect((await vlanSubinterfaceProvider.check({}, { ...base, parent: "enp129s0f1np1", vlanId: 7 })).inputs.name).toBe("enp129s0f1np1.7");
  });

  const stringFields: [string, string, (v: string) => Record<string, unknown>][] = [
    ["parent", "parent", (v) => ({ ...base, parent: v, name: "v10" })],
    ["name", "name", (v) => ({ ...base, name: v })],
    ["bridge", "bridge", (v) => ({ ...base, bridge: v })],
    ["addresses", "addresses", (v) => ({ ...base, addresses: [v] })],
    ["protocol", "protocol", (v) => ({ ...base, protocol: v })],
    ["persistence", "persistence", (v) => ({ ...base, persistence: v })],
  ];
  it.each(stringFields)("rejects at least 50 hostile values for %s, naming %s", async (_label, property, make) => {
    let rejected = 0;
    for (const v of HOSTILE_STRINGS) {
      const failures = await failuresFor(make(v));
      expect({ v, property: failures[0]?.property }).toEqual({ v, property });
      rejected++;
    }
    expect(rejected).toBeGreaterThanOrEqual(50);
  });

  it.each([
    [{ vlanId: 0 }, "vlanId", /1–4094/],
    [{ vlanId: 4095 }, "vlanId", /1–4094/],
    [{ vlanId: 10.5 }, "vlanId", /whole number/],
    [{ vlanId: "10" }, "vlanId", /number/],
    [{ vlanId: undefined }, "vlanId", /is required/],
    [{ parent: undefined }, "parent", /is required/],
    [{ parent: "lo" }, "parent", /loopback/],
    [{ protocol: "802.1q" }, "protocol", /"802\.1Q".*"802\.1ad"/],
    [{ mtu: 67 }, "mtu", /./],
    [{ mtu: 65536 }, "mtu", /./],
    [{ name: "eth1" }, "name", /differ from parent/],
    [{ bridge: "eth1" }, "bridge", /another interface/],
    [{ bridge: "eth1.10" }, "bridge", /another interface/],
    [{ bridge: "br10", addresses: ["10.0.0.1/24"] }, "addresses", /bridge port's own addresses/],
    [{ addresses: ["10.0.0.1/24", "10.0.0.1/24"] }, "addresses", /twice/],
    [{ addresses: ["10.0.0.1"] }, "addresses", /CIDR/],
    [{ persistence: "systemd" }, "persistence", /must be one of "auto"/],
    [{ colour: "blue" }, "(inputs)", /unknown field/],
  ])("rejects %j at %s", async (patch, property, re) => {
    const failures = await failuresFor({ ...base, ...patch });
    expect(failures.find((f) => f.property === property)?.reason).toMatch(re);
  });

  it("never echoes a secret in a failure", async () => {
    const failures = await failuresFor({ ...base, connection: { host: "h", password: "hunter2hunter2", privateKey: 42 }, vlanId: 0 });
    expect(failures.map((f) => f.property).sort()).toEqual(["connection", "vlanId"]);
    expect(JSON.stringify(failures)).not.toMatch(/hunter2|42/);
  });

  it("validates around unknown values during preview", async () => {
    const r = await vlanSubinterfaceProvider.check({}, { ...base, bridge: UNKNOWN, vlanId: 5000 });
    expect(r.failures?.map((f) => f.property)).toEqual(["vlanId"]);
    const ok = await vlanSubinterfaceProvider.check({}, { ...base, parent: UNKNOWN, bridge: UNKNOWN });
    expect(ok.failures).toBeUndefined();
  });
});

describe("VlanSubinterface diff", () => {
  const olds = {
    ...base,
    name: "eth1.10",
    protocol: "802.1Q",
    addresses: [],
    bridge: "br10",
    adopt: false,
    persistence: "runtime",
    ifindex: 7,
    macAddress: "52:54:00:6b:76:03",
    operState: "UP",
  };
  const diff = (news: Record<string, unknown>, from: Record<string, unknown> = olds) => vlanSubinterfaceProvider.diff("id", from, news);

  it("reports no change when only computed outputs differ", async () => {
    const { ifindex: _i, macAddress: _m, operState: _o, ...news } = olds;
    expect(await diff(news)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });
  it("updates mtu, addresses and bridge in place", async () => {
    for (const patch of [{ mtu: 1400 }, { addresses: [] as string[], bridge: "br20" }]) {
      expect(await diff({ ...olds, ...patch })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    }
  });
  it("detaches when bridge is removed from the program, but leaves an unset mtu alone", async () => {
    const { bridge: _b, ...news } = olds;
    expect(await diff(news)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    expect(await diff(olds, { ...olds, mtu: 1400 })).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });
  it("replaces on vlanId/parent/protocol, deleting first when the name stays", async () => {
    expect(await diff({ ...olds, protocol: "802.1ad" })).toEqual({ changes: true, replaces: ["protocol"], deleteBeforeReplace: true });
    // A new default name (eth1.11): both can exist at once.
    expect(await diff({ ...olds, vlanId: 11, name: "eth1.11" })).toEqual({ changes: true, replaces: ["vlanId", "name"], deleteBeforeReplace: false });
    expect(await diff({ ...olds, parent: "eth2", name: "eth2.10" })).toEqual({ changes: true, replaces: ["parent", "name"], deleteBeforeReplace: false });
  });
  it("a rename of the same tag deletes first (the kernel carries a tag once)", async () => {
    expect(await diff({ ...olds, name: "v10" })).toEqual({ changes: true, replaces: ["name"], deleteBeforeReplace: true });
  });
  it("replaces on a host change (never deleting first) but not on a key rotation", async () => {
    expect(await diff({ ...olds, connection: { ...connection, host: "kvm2" } })).toEqual({ changes: true, replaces: ["connection"], deleteBeforeReplace: false });
    expect(await diff({ ...olds, connection: { ...connection, privateKey: "other" } })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });
  it("treats unknown values as changes", async () => {
    expect((await diff({ ...olds, vlanId: UNKNOWN })).replaces).toEqual(["vlanId"]);
  });
});

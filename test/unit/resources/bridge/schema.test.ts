import { bridgeProvider } from "../../../../provider/resources/bridge";
import { UNKNOWN } from "../../../../provider/validate";
import { HOSTILE_STRINGS } from "../../../../testbed/hostile";

const connection = { host: "kvm1.example.net", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbody123456\n-----END OPENSSH PRIVATE KEY-----" };
const base = { connection, name: "br0" };

async function failuresFor(news: Record<string, unknown>) {
  return (await bridgeProvider.check({}, news)).failures ?? [];
}

describe("Bridge check", () => {
  it("fills defaults for a minimal bridge", async () => {
    const r = await bridgeProvider.check({}, { ...base, __provider: "serialized" });
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toEqual({
      ...base,
      stp: false,
      ports: [],
      addresses: [],
      adopt: false,
      takeOverUplink: false,
      confirmTimeoutSec: 60,
      persistence: "runtime",
      model: "virtio-net-pci",
    });
  });

  it("normalises addresses and MACs", async () => {
    const r = await bridgeProvider.check({}, { ...base, addresses: ["10.0.0.1/24", "FD00:0::1/64"], macAddress: "52:54:00:AB:CD:EF" });
    expect(r.inputs.addresses).toEqual(["10.0.0.1/24", "fd00::1/64"]);
    expect(r.inputs.macAddress).toBe("52:54:00:ab:cd:ef");
  });

  // Each field with the values of the hostile list that are legitimately valid there
  // (a 16-letter host or user name is fine; "/" is a syntactically valid local path).
  const stringFields: [string, string, (v: string) => Record<string, unknown>, string[]][] = [
    ["name", "name", (v) => ({ ...base, name: v }), []],
    ["ports", "ports", (v) => ({ ...base, ports: [v] }), []],
    ["addresses", "addresses", (v) => ({ ...base, addresses: [v] }), []],
    ["macAddress", "macAddress", (v) => ({ ...base, macAddress: v }), []],
    ["persistence", "persistence", (v) => ({ ...base, persistence: v }), []],
    ["connection.host", "connection", (v) => ({ ...base, connection: { ...connection, host: v } }), ["aaaaaaaaaaaaaaaa", "abcdefghijklmnopqrstuvwxyz"]],
    ["connection.user", "connection", (v) => ({ ...base, connection: { ...connection, user: v } }), ["aaaaaaaaaaaaaaaa", "abcdefghijklmnopqrstuvwxyz"]],
    ["connection.hostKey", "connection", (v) => ({ ...base, connection: { ...connection, hostKey: v } }), []],
    ["connection.knownHostsFile", "connection", (v) => ({ ...base, connection: { ...connection, knownHostsFile: v } }), ["/"]],
  ];
  it.each(stringFields)("rejects at least 50 hostile values for %s, naming %s", async (_label, property, make, allowed) => {
    let rejected = 0;
    for (const v of HOSTILE_STRINGS) {
      if (allowed.includes(v)) continue;
      const failures = await failuresFor(make(v));
      expect({ v, property: failures[0]?.property }).toEqual({ v, property });
      rejected++;
    }
    expect(rejected).toBeGreaterThanOrEqual(50);
  });

  it.each([
    [{ mtu: 67 }, "mtu"],
    [{ mtu: 65536 }, "mtu"],
    [{ mtu: 1500.5 }, "mtu"],
    [{ forwardDelay: 31 }, "forwardDelay"],
    [{ stp: true, forwardDelay: 1 }, "forwardDelay"],
    [{ helloTime: 0.5 }, "helloTime"],
    [{ maxAge: 41 }, "maxAge"],
    [{ priority: -1 }, "priority"],
    [{ ageingTime: 0.001 }, "ageingTime"],
    [{ macAddress: "01:00:5e:00:00:01" }, "macAddress"],
    [{ ports: ["br0"] }, "ports"],
    [{ ports: ["eth1", "eth1"] }, "ports"],
    [{ addresses: ["10.0.0.1"] }, "addresses"],
    [{ addresses: ["10.0.0.1/33"] }, "addresses"],
    [{ addresses: ["1.2.3.04/24"] }, "addresses"],
    [{ colour: "blue" }, "(inputs)"],
    [{ connection: { host: "h", port: 0 } }, "connection"],
    [{ connection: { host: "h", hostKey: "SHA256:abc" } }, "connection"],
    [{ connection: { host: "h", hostKey: "SHA256:" + "A".repeat(43), insecureIgnoreHostKey: true } }, "connection"],
  ])("rejects %j at %s", async (patch, property) => {
    const failures = await failuresFor({ ...base, ...patch });
    expect(failures.map((f) => f.property)).toContain(property);
  });

  // The campaign (#14 §3): fe80::1/64 passed check, the create added it, and verify
  // failed: observe leaves out link-local IPv6 (the kernel makes its own on every link)
  // and scope-host 127/8. Addresses the kernel refuses, ignores or hides from the read
  // are refused at check, naming the field and saying why.
  it.each([
    ["fe80::1/64", /link-local/],
    ["FE80::abcd/10", /link-local/],
    ["127.0.0.2/8", /loopback/],
    ["::1/128", /loopback/],
    ["0.0.0.0/8", /unspecified/],
    ["::/128", /unspecified/],
    ["224.0.0.5/24", /multicast/],
    ["ff02::5/64", /multicast/],
    ["255.255.255.255/32", /broadcast/],
  ])("refuses the non-unicast or kernel-managed address %s", async (addr, why) => {
    const failures = await failuresFor({ ...base, addresses: [addr] });
    const f = failures.find((x) => x.property === "addresses");
    expect(f?.reason).toMatch(why);
  });
  it.each(["169.254.3.3/16", "fd00::1/64", "2001:db8::1/64", "100.64.0.1/10"])("accepts the unicast address %s", async (addr) => {
    expect(await failuresFor({ ...base, addresses: [addr] })).toEqual([]);
  });

  // #14: a name starting with '.' makes its state file hidden from the `*` glob
  // observe lists state with, so delete would leave it behind.
  it.each([
    [{ name: ".x" }, "name"],
    [{ ports: [".eth1"] }, "ports"],
  ])("refuses the hidden name %j at %s", async (patch, property) => {
    const failures = await failuresFor({ ...base, ...patch });
    expect(failures).toEqual([{ property, reason: expect.stringMatching(/must not start with '\.'/) }]);
  });

  // Bridge "x" with port "y" persists to 05-kvmnet-bridge-x-port-y.network and
  // kvmnet-bridge-x-port-y.nmconnection: the very files bridge "x-port-y" would own.
  it.each(["x-port-y", "br-port-eth1", "a-port-"])("refuses the bridge name %j, whose files would collide with a port's", async (name) => {
    const failures = await failuresFor({ ...base, name });
    expect(failures).toEqual([{ property: "name", reason: expect.stringMatching(/^name: must not contain "-port-"/) }]);
  });

  it.each(["port", "br-port", "port-br", "br-portx", "xport-y", "a-PORT-b"])("accepts the bridge name %j", async (name) => {
    expect(await failuresFor({ ...base, name })).toEqual([]);
  });

  it("names the nested path in the reason", async () => {
    const failures = await failuresFor({ ...base, ports: ["ok0", "bad;port"] });
    expect(failures[0].reason).toMatch(/^ports\.1: /);
  });

  it("never echoes a secret in a failure", async () => {
    const failures = await failuresFor({ ...base, connection: { host: "h", privateKey: 42, password: "hunter2hunter2" }, mtu: 1 });
    const text = JSON.stringify(failures);
    expect(failures.map((f) => f.property)).toContain("connection");
    expect(text).not.toContain("42");
    expect(text).not.toContain("hunter2");
  });

  it.each([{ password: ["hunter2hunter2"] }, { password: 42, note: "hunter2hunter2" }, { password: { p: "hunter2hunter2" } }])(
    "never echoes a value holding a secret (connection.sudo %j)",
    async (sudo) => {
      const failures = await failuresFor({ ...base, connection: { host: "h", sudo } });
      expect(failures.map((f) => f.property)).toEqual(["connection"]);
      expect(JSON.stringify(failures)).not.toMatch(/hunter2|42/);
    },
  );

  it("validates around unknown values during preview", async () => {
    const r = await bridgeProvider.check({}, { ...base, name: UNKNOWN, mtu: 1 });
    expect(r.failures?.map((f) => f.property)).toEqual(["mtu"]);
    const ok = await bridgeProvider.check({}, { ...base, connection: UNKNOWN, ports: UNKNOWN });
    expect(ok.failures).toBeUndefined();
  });
});

describe("Bridge diff", () => {
  const olds = { ...base, stp: false, ports: ["eth1"], addresses: [], adopt: false, persistence: "runtime", macAddress: "52:54:00:00:00:01", ifindex: 5 };
  it("reports no change when only computed fields differ", async () => {
    const news = { ...base, stp: false, ports: ["eth1"], addresses: [], adopt: false, persistence: "runtime" };
    expect(await bridgeProvider.diff("id", olds, news)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });
  it("updates mtu in place", async () => {
    const news = { ...olds, mtu: 9000 };
    expect(await bridgeProvider.diff("id", olds, news)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });
  it("replaces on rename, deleting first when ports would collide", async () => {
    expect(await bridgeProvider.diff("id", olds, { ...olds, name: "br1" })).toEqual({ changes: true, replaces: ["name"], deleteBeforeReplace: true });
    expect(await bridgeProvider.diff("id", olds, { ...olds, name: "br1", ports: [] })).toEqual({ changes: true, replaces: ["name"], deleteBeforeReplace: false });
  });
  it("replaces on a host change but not on a key rotation", async () => {
    expect((await bridgeProvider.diff("id", olds, { ...olds, connection: { ...connection, host: "kvm2" } })).replaces).toEqual(["connection"]);
    const rotated = await bridgeProvider.diff("id", olds, { ...olds, connection: { ...connection, privateKey: "other" } });
    expect(rotated).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });
  it("treats unknown values as changes", async () => {
    expect((await bridgeProvider.diff("id", olds, { ...olds, name: UNKNOWN })).replaces).toEqual(["name"]);
  });
});

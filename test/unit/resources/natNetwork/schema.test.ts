import fc from "fast-check";
import { natNetworkProvider } from "../../../../provider/resources/natNetwork";
import { cidrsOverlap, defaultBridgeName, natNetworkInputsSchema } from "../../../../provider/resources/natNetwork/schema";
import { UNKNOWN } from "../../../../provider/validate";
import { HOSTILE_STRINGS } from "../../../../testbed/hostile";

const base = { connection: { host: "h" }, name: "lab", subnet: "192.168.122.0/24" };
const check = (over: Record<string, unknown>) => natNetworkProvider.check({}, { ...base, ...over });

describe("natNetwork schema defaults", () => {
  it("fills bridgeName, gateway, mode, dhcp, dns, persistence and adopt", async () => {
    const r = await check({});
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toEqual({
      ...base,
      bridgeName: "kvn-lab",
      gateway: "192.168.122.1",
      mode: "nat",
      dhcp: false,
      dns: { enabled: true, hosts: [] },
      persistence: "runtime",
      model: "virtio-net-pci",
      adopt: false,
    });
  });

  it("derives bridge names of at most 15 characters, distinct for long names sharing a prefix", () => {
    expect(defaultBridgeName("lab")).toBe("kvn-lab");
    expect(defaultBridgeName("abcdefghijk")).toBe("kvn-abcdefghijk");
    const a = defaultBridgeName("production_a1");
    const b = defaultBridgeName("production_a2");
    expect(a).toHaveLength(15);
    expect(a).not.toBe(b);
    fc.assert(fc.property(fc.stringMatching(/^[A-Za-z][A-Za-z0-9_]{0,14}$/), (n) => defaultBridgeName(n).length <= 15));
  });

  it("fills dhcp leaseTime and hosts", async () => {
    const r = await check({ dhcp: { start: "192.168.122.100", end: "192.168.122.200" } });
    expect(r.inputs.dhcp).toEqual({ start: "192.168.122.100", end: "192.168.122.200", leaseTime: 3600, hosts: [] });
  });
});

describe("natNetwork schema refusals name the field", () => {
  it.each([
    [{ subnet: "192.168.122.1/24" }, "subnet", /host bits zero.*192\.168\.122\.0\/24/],
    [{ subnet: "10.0.0.0/31" }, "subnet", /\/8 to \/30/],
    [{ subnet: "fd00::/64" }, "subnet", /IPv4 network/],
    [{ gateway: "192.168.123.1" }, "gateway", /inside 192\.168\.122\.0\/24/],
    [{ gateway: "192.168.122.255" }, "gateway", /usable/],
    [{ mode: "bridge" }, "mode", /one of "nat", "route", "isolated", "open"/],
    [{ dhcp: { start: "192.168.122.200", end: "192.168.122.100" } }, "dhcp", /dhcp\.end: must not come before/],
    [{ dhcp: { start: "192.168.122.1", end: "192.168.122.10" } }, "dhcp", /includes the gateway/],
    [{ dhcp: { start: "192.168.122.10", end: "192.168.123.10" } }, "dhcp", /dhcp\.end: must be a usable address/],
    [{ dhcp: { start: "192.168.122.10", end: "192.168.122.20", leaseTime: 60 } }, "dhcp", /at least 120 seconds/],
    [{ dhcp: { start: "192.168.122.10", end: "192.168.122.20", hosts: [{ mac: "53:54:00:00:00:01", ip: "192.168.122.5" }] } }, "dhcp", /unicast/],
    [{ dhcp: { start: "192.168.122.10", end: "192.168.122.20", hosts: [{ mac: "52:54:00:00:00:01", ip: "192.168.122.1" }] } }, "dhcp", /hosts\.0\.ip: is the gateway/],
    [
      {
        dhcp: {
          start: "192.168.122.10",
          end: "192.168.122.20",
          hosts: [
            { mac: "52:54:00:00:00:01", ip: "192.168.122.5" },
            { mac: "52:54:00:00:00:01", ip: "192.168.122.6" },
          ],
        },
      },
      "dhcp",
      /hosts\.1\.mac: lists 52:54:00:00:00:01 twice/,
    ],
    [{ dns: { hosts: [{ ip: "10.0.0.1", hostnames: [] }] } }, "dns", /at least one name/],
    [{ uplink: "kvn-lab" }, "uplink", /own bridge/],
    [{ persistence: "systemd" }, "persistence", /must be one of "auto"/],
    [{ extra: 1 }, "(inputs)", /unknown field/],
  ])("%j → %s", async (over, property, re) => {
    const r = await check(over);
    expect(r.failures?.[0]).toEqual({ property, reason: expect.stringMatching(re) });
  });

  it.each(HOSTILE_STRINGS.map((s) => [s]))("rejects hostile name/bridgeName %j", async (v) => {
    expect((await check({ name: v })).failures?.[0]?.property).toBe("name");
    expect((await check({ bridgeName: v })).failures?.[0]?.property).toBe("bridgeName");
  });

  it("rejects hostile DNS names except plain lower-case words (valid names)", async () => {
    for (const v of HOSTILE_STRINGS) {
      const ok = /^[a-z]+$/.test(v);
      const d = await check({ dns: { domain: v, hosts: [{ ip: "10.0.0.1", hostnames: [v] }] } });
      expect({ v, failed: d.failures?.map((f) => f.property) }).toEqual({ v, failed: ok ? undefined : ["dns", "dns"] });
    }
  });

  it("validates around unknowns during preview", async () => {
    expect((await check({ subnet: UNKNOWN })).failures).toBeUndefined();
    expect((await check({ name: UNKNOWN, mode: "bogus" })).failures?.map((f) => f.property)).toEqual(["mode"]);
  });
});

/**
 * #14: dnsmasq reads each field of a dhcp-host line by its shape (dnsmasq(8)
 * --dhcp-host): a MAC, an IPv4 address, a lease time (digits with an optional
 * s/m/h/d/w, or "infinite"), "ignore", else a host name. A "hostname" of any
 * other shape would change what the line means, so check refuses it.
 */
describe("natNetwork names that reach dnsmasq mean what they say", () => {
  const dhcpHost = (hostname: unknown) => ({
    dhcp: { start: "192.168.122.100", end: "192.168.122.200", hosts: [{ mac: "52:54:00:00:00:10", ip: "192.168.122.10", hostname }] },
  });
  const READ_AS_KEYWORD_OR_ADDRESS = [
    "ignore",
    "IGNORE",
    "Ignore",
    "infinite",
    "INFINITE",
    "12h",
    "12H",
    "45m",
    "30s",
    "2d",
    "1w",
    "3600",
    "0",
    "00",
    "127.0.0.1",
    "10.66.0.77",
    "10.1",
    "0x0a.0x01",
    "0x7f.1",
    "web.123",
    "1.2.3.4.5",
  ];
  it.each(READ_AS_KEYWORD_OR_ADDRESS.map((s) => [s]))("refuses dhcp.hosts[].hostname %j, naming the field", async (v) => {
    const r = await check(dhcpHost(v));
    expect(r.failures).toEqual([{ property: "dhcp", reason: expect.stringMatching(/^dhcp\.hosts\.0\.hostname: /) }]);
  });

  it.each(HOSTILE_STRINGS.filter((s) => !/^[a-z]+$/.test(s)).map((s) => [s]))("refuses hostile dhcp.hosts[].hostname %j", async (v) => {
    expect((await check(dhcpHost(v))).failures?.map((f) => f.property)).toEqual(["dhcp"]);
  });

  it.each(["web", "web-1", "h12", "12web", "1h2", "a", "h", "w", "ignored", "infinity", "x0x1"].map((s) => [s]))(
    "accepts the host name %j (dnsmasq reads it as a name)",
    async (v) => {
      const r = await check(dhcpHost(v));
      expect(r.failures).toBeUndefined();
    },
  );

  // dnsmasq(8) --domain: a DHCP host name with a domain part is allowed only when
  // the part after its first '.' is the domain; otherwise dnsmasq drops the name.
  it.each([
    ["web.lab", undefined],
    ["web.other", "lab"],
    ["web.sub.lab", "lab"],
    ["web.lab", "lab", false],
  ])("refuses the dotted dhcp host name %j when dns.domain is %j (dns enabled: %j)", async (hostname, domain, enabled = true) => {
    const r = await check({ ...dhcpHost(hostname), dns: { enabled, domain } });
    expect(r.failures).toEqual([{ property: "dhcp", reason: expect.stringMatching(/^dhcp\.hosts\.0\.hostname: .*domain/) }]);
  });

  it.each([
    ["web.lab", "lab"],
    ["web.LAB", "lab"],
    ["db.lab.example", "lab.example"],
  ])("accepts the dotted dhcp host name %j when dns.domain is %j", async (hostname, domain) => {
    expect((await check({ ...dhcpHost(hostname), dns: { domain } })).failures).toBeUndefined();
  });

  it("validates a dotted dhcp host name around an unknown domain (preview)", async () => {
    expect((await check({ ...dhcpHost("web.lab"), dns: { domain: UNKNOWN } })).failures).toBeUndefined();
    expect((await check({ ...dhcpHost("web.lab"), dns: UNKNOWN })).failures).toBeUndefined();
  });

  // An addn-hosts line is "<ip> <name>…" and domain= takes a name: names whose
  // last label is all digits (RFC 1123 §2.1) or that inet_aton reads as an
  // address would answer queries for an address-looking name.
  it.each(["127.0.0.1", "10.66.0.77", "10.1", "0", "3600", "web.123", "0x0a.0x01"].map((s) => [s]))(
    "refuses dns.domain and dns.hosts[].hostnames %j, naming the field",
    async (v) => {
      expect((await check({ dns: { domain: v } })).failures).toEqual([{ property: "dns", reason: expect.stringMatching(/^dns\.domain: /) }]);
      expect((await check({ dns: { hosts: [{ ip: "192.168.122.5", hostnames: ["ok", v] }] } })).failures).toEqual([
        { property: "dns", reason: expect.stringMatching(/^dns\.hosts\.0\.hostnames\.1: /) },
      ]);
    },
  );

  it("accepts ordinary names in dns.domain and dns.hosts", async () => {
    const r = await check({ dns: { domain: "lab.example", hosts: [{ ip: "192.168.122.5", hostnames: ["www", "12h", "ignore", "db.lab.example"] }] } });
    expect(r.failures).toBeUndefined();
  });

  it.each([1.5, -1, "3600", "12h", "infinite", 119, 31_536_001])("refuses dhcp.leaseTime %j (dnsmasq reads only whole seconds)", async (v) => {
    const r = await check({ dhcp: { start: "192.168.122.100", end: "192.168.122.200", leaseTime: v } });
    expect(r.failures).toEqual([{ property: "dhcp", reason: expect.stringMatching(/^dhcp\.leaseTime: /) }]);
  });
});

/**
 * State written before #14's name rules may hold names check now refuses.
 * Reading it must still work, or neither update (which parses the old
 * inputs first) nor refresh nor destroy could get past it: the program's
 * new inputs are judged by the new rules, the stored ones as they were.
 */
describe("natNetwork state written before the dnsmasq name rules", () => {
  const stored = (hostname: string, domain?: string) => ({
    ...natNetworkInputsSchema.parse(base),
    dhcp: { start: "192.168.122.100", end: "192.168.122.200", leaseTime: 3600, hosts: [{ mac: "52:54:00:00:00:10", ip: "192.168.122.10", hostname }] },
    dns: { enabled: true, hosts: [{ ip: "192.168.122.5", hostnames: ["10.66.0.77"] }], ...(domain ? { domain } : {}) },
  });
  it.each([["12h"], ["ignore"], ["web.other"], ["10.66.0.77"]])("is still read (hostname %j): update judges only the new inputs", async (hostname) => {
    // The new inputs are refused too, so update stops before any connection: by the new rules, not on the old state.
    const err = await natNetworkProvider.update("h/natNetwork/lab", stored(hostname, "lab"), stored(hostname, "lab")).then(
      () => undefined,
      (e: { kind: string; message: string }) => e,
    );
    expect(err?.kind).toBe("InvalidArgument");
    expect(err?.message).toMatch(/^InvalidArgument: invalid natNetwork: /);
    expect(err?.message).toMatch(/dhcp\.hosts\.0\.hostname: /);
  });
});

describe("cidrsOverlap", () => {
  it.each([
    ["10.0.0.0/24", "10.0.0.128/25", true],
    ["10.0.0.0/24", "10.0.1.0/24", false],
    ["10.0.0.5/8", "10.200.0.0/16", true],
    ["192.168.1.1/32", "192.168.1.0/24", true],
  ])("%s vs %s → %s", (a, b, want) => {
    expect(cidrsOverlap(a, b)).toBe(want);
    expect(cidrsOverlap(b, a)).toBe(want);
  });
});

describe("diff", () => {
  const outs = natNetworkInputsSchema.parse(base) as unknown as Record<string, unknown>;
  it.each([
    [{ mode: "route" }, [], false],
    [{ mtu: 1400 }, [], false],
    [{ uplink: "eth1" }, [], false],
    [{ dhcp: { start: "192.168.122.100", end: "192.168.122.200", leaseTime: 3600, hosts: [] } }, [], false],
    // Same name: the table and files would collide even when the subnets do not.
    [{ subnet: "10.1.0.0/24", gateway: "10.1.0.1" }, ["subnet", "gateway"], true],
    [{ name: "lab2", bridgeName: "kvn-lab2", subnet: "10.1.0.0/24", gateway: "10.1.0.1" }, ["name", "bridgeName", "subnet", "gateway"], false],
    [{ subnet: "192.168.122.0/25" }, ["subnet"], true],
    [{ bridgeName: "virbr9" }, ["bridgeName"], true],
    [{ name: "lab2", bridgeName: "kvn-lab2" }, ["name", "bridgeName"], true],
  ])("%j → replaces %j (deleteBeforeReplace %s)", async (patch, replaces, dbr) => {
    const d = await natNetworkProvider.diff("id", outs, { ...outs, ...patch });
    expect(d).toEqual({ changes: true, replaces, deleteBeforeReplace: dbr });
  });

  it("reads state from before `adopt` existed as adopt: false; setting it is an in-place change", async () => {
    const { adopt: _a, ...older } = outs;
    expect(await natNetworkProvider.diff("id", older, outs)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
    expect(await natNetworkProvider.diff("id", older, { ...outs, adopt: true })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });
});

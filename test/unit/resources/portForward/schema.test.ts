import { portForwardProvider } from "../../../../provider/resources/portForward";
import { deriveName } from "../../../../provider/resources/portForward/schema";
import { UNKNOWN } from "../../../../provider/validate";
import { HOSTILE_STRINGS } from "../../../../testbed/hostile";

const connection = { host: "kvm1.example.net", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbody123456\n-----END OPENSSH PRIVATE KEY-----" };
const base = { connection, protocol: "tcp", hostPort: 8080, destination: "192.168.122.10" };

async function failuresFor(news: Record<string, unknown>) {
  return (await portForwardProvider.check({}, news)).failures ?? [];
}

describe("PortForward check", () => {
  it("fills defaults and keeps the derived name out of the inputs", async () => {
    const r = await portForwardProvider.check({}, { ...base, __provider: "serialized" });
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toEqual({ ...base, destinationPort: 8080, sourceCidrs: [], hairpin: true, persistence: "runtime", adopt: false });
  });

  it.each([
    [{ hostPort: "8000-8010" }, { hostPort: "8000-8010", destinationPort: "8000-8010" }],
    [
      { hostPort: "8000-8010", destinationPort: 9000 },
      { hostPort: "8000-8010", destinationPort: "9000-9010" },
    ],
    [
      { hostPort: "8000-8010", destinationPort: "9000-9010" },
      { hostPort: "8000-8010", destinationPort: "9000-9010" },
    ],
    [{ hostPort: "8080-8080" }, { hostPort: 8080, destinationPort: 8080 }],
    [{ destinationPort: 80 }, { hostPort: 8080, destinationPort: 80 }],
    [{ sourceCidrs: ["10.0.0.0/8", "192.0.2.7"] }, { sourceCidrs: ["10.0.0.0/8", "192.0.2.7/32"] }],
  ])("normalises %j", async (patch, want) => {
    const r = await portForwardProvider.check({}, { ...base, ...patch });
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toMatchObject(want);
  });

  it("derives names from the identity", () => {
    expect(deriveName({ protocol: "tcp", hostPort: 8080 })).toBe("tcp_any_8080");
    expect(deriveName({ protocol: "udp", hostPort: "5000-5010", hostAddress: "198.19.0.11" })).toBe("udp_198_19_0_11_5000_5010");
  });

  const stringFields: [string, string, (v: string) => Record<string, unknown>, string[]][] = [
    ["protocol", "protocol", (v) => ({ ...base, protocol: v }), []],
    ["hostPort", "hostPort", (v) => ({ ...base, hostPort: v }), []],
    ["destinationPort", "destinationPort", (v) => ({ ...base, destinationPort: v }), []],
    ["destination", "destination", (v) => ({ ...base, destination: v }), []],
    ["hostAddress", "hostAddress", (v) => ({ ...base, hostAddress: v }), []],
    ["sourceCidrs", "sourceCidrs", (v) => ({ ...base, sourceCidrs: [v] }), []],
    ["persistence", "persistence", (v) => ({ ...base, persistence: v }), []],
    // Printable ASCII without quotes/backslashes is a fine description.
    ["description", "description", (v) => ({ ...base, description: v }), HOSTILE_STRINGS.filter((s) => /^[\x20-\x7e]{1,128}$/.test(s) && !/["'\\`]/.test(s))],
  ];
  it.each(stringFields)("rejects hostile values for %s, naming %s", async (_label, property, make, allowed) => {
    let rejected = 0;
    for (const v of HOSTILE_STRINGS) {
      if (allowed.includes(v)) continue;
      const failures = await failuresFor(make(v));
      expect({ v, property: failures[0]?.property }).toEqual({ v, property });
      rejected++;
    }
    expect(rejected).toBeGreaterThanOrEqual(property === "description" ? 10 : 50);
  });

  it.each([
    [{ protocol: "sctp" }, "protocol"],
    [{ hostPort: 0 }, "hostPort"],
    [{ hostPort: 65536 }, "hostPort"],
    [{ hostPort: 80.5 }, "hostPort"],
    [{ hostPort: "8010-8000" }, "hostPort"],
    [{ hostPort: "08000-8010" }, "hostPort"],
    [{ hostPort: "8000" }, "hostPort"],
    [{ hostPort: "8000-8010", destinationPort: "9000-9005" }, "destinationPort"],
    [{ hostPort: "65530-65535", destinationPort: 65533 }, "destinationPort"],
    [{ hostPort: "1000-3000", destinationPort: 5000 }, "destinationPort"],
    [{ destination: "0.0.0.0" }, "destination"],
    [{ destination: "127.0.0.1" }, "destination"],
    [{ destination: "224.0.0.1" }, "destination"],
    [{ destination: "255.255.255.255" }, "destination"],
    [{ destination: "10.0.0.01" }, "destination"],
    [{ destination: "fd00::1" }, "destination"],
    [{ hostAddress: "10.0.0.1/24" }, "hostAddress"],
    [{ sourceCidrs: ["10.1.2.3/8"] }, "sourceCidrs"],
    [{ sourceCidrs: ["10.0.0.0/33"] }, "sourceCidrs"],
    [{ sourceCidrs: ["10.0.0.0/8", "10.0.0.0/8"] }, "sourceCidrs"],
    [{ description: "x".repeat(129) }, "description"],
    [{ description: "" }, "description"],
    [{ description: "café" }, "description"],
    [{ name: "web" }, "(inputs)"],
    [{ hairpin: "yes" }, "hairpin"],
  ])("rejects %j at %s", async (patch, property) => {
    const failures = await failuresFor({ ...base, ...patch });
    expect(failures.map((f) => f.property)).toContain(property);
  });

  it("accepts a 128-character description and a 1024-port remapped range", async () => {
    expect(await failuresFor({ ...base, description: "d".repeat(128) })).toEqual([]);
    expect(await failuresFor({ ...base, hostPort: "1000-2023", destinationPort: 5000 })).toEqual([]);
  });

  it("validates around unknown values during preview", async () => {
    const r = await portForwardProvider.check({}, { ...base, destination: UNKNOWN, hostPort: UNKNOWN });
    expect(r.failures).toBeUndefined();
  });

  it("never echoes a secret", async () => {
    const failures = await failuresFor({ ...base, connection: { ...connection, privateKey: "a\0b" } });
    expect(JSON.stringify(failures)).not.toContain("secretbody");
  });
});

describe("PortForward diff", () => {
  const olds = { ...base, destinationPort: 8080, sourceCidrs: [], hairpin: true, persistence: "runtime", table: "kvmnet_pf_tcp_any_8080", warnings: [], drift: [] };
  const news = { ...base, destinationPort: 8080, sourceCidrs: [], hairpin: true, persistence: "runtime" };
  it.each([
    [{}, { changes: false, replaces: [], deleteBeforeReplace: false }],
    [{ destination: "192.168.122.11" }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ destinationPort: 80 }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ sourceCidrs: ["10.0.0.0/8"] }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ hairpin: false }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ description: "web" }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ protocol: "udp" }, { changes: true, replaces: ["protocol"], deleteBeforeReplace: false }],
    [
      { hostPort: 8081, destinationPort: 8081 },
      { changes: true, replaces: ["hostPort"], deleteBeforeReplace: false },
    ],
    [
      { hostPort: "8000-8090", destinationPort: "8000-8090" },
      { changes: true, replaces: ["hostPort"], deleteBeforeReplace: true },
    ],
    [{ hostAddress: "198.19.0.11" }, { changes: true, replaces: ["hostAddress"], deleteBeforeReplace: true }],
    [{ connection: { ...connection, host: "kvm2" } }, { changes: true, replaces: ["connection"], deleteBeforeReplace: false }],
    [{ connection: { ...connection, port: 2222 } }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ persistence: "auto" }, { changes: true, replaces: [], deleteBeforeReplace: false }],
    [{ adopt: false }, { changes: false, replaces: [], deleteBeforeReplace: false }],
    [{ adopt: true }, { changes: true, replaces: [], deleteBeforeReplace: false }],
  ])("%j → %j", async (patch, want) => {
    expect(await portForwardProvider.diff("id", olds, { ...news, ...patch })).toEqual(want);
  });

  it("reads state from before `persistence` existed as runtime, and still sees a real change", async () => {
    const { persistence: _p, ...older } = olds;
    expect(await portForwardProvider.diff("id", older, news)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
    expect(await portForwardProvider.diff("id", older, { ...news, persistence: "auto" })).toMatchObject({ changes: true, replaces: [] });
  });

  it("treats removing description or hostAddress as a change", async () => {
    expect(await portForwardProvider.diff("id", { ...olds, description: "web" }, news)).toMatchObject({ changes: true, replaces: [] });
    expect(await portForwardProvider.diff("id", { ...olds, hostAddress: "198.19.0.11" }, news)).toMatchObject({
      changes: true,
      replaces: ["hostAddress"],
      deleteBeforeReplace: true,
    });
  });
});

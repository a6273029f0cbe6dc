import { pciPassthroughProvider } from "../../../../provider/resources/pciPassthrough";
import { normalisePciAddress, pciPassthroughStoredSchema } from "../../../../provider/resources/pciPassthrough/schema";
import { UNKNOWN } from "../../../../provider/validate";
import { HOSTILE_STRINGS } from "../../../../testbed/hostile";

const connection = { host: "kvm1.example.net", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbody123456\n-----END OPENSSH PRIVATE KEY-----" };
const base = { connection, address: "0000:65:00.0" };

async function failuresFor(news: Record<string, unknown>) {
  return (await pciPassthroughProvider.check({}, news)).failures ?? [];
}

describe("PciPassthrough check", () => {
  it("fills defaults and keeps the derived name out of the inputs", async () => {
    const r = await pciPassthroughProvider.check({}, { ...base, __provider: "serialized" });
    expect(r.failures).toBeUndefined();
    expect(r.inputs).toEqual({ ...base, driver: "vfio-pci", includeIommuGroup: false, force: false, persistence: "runtime" });
  });

  it.each([
    ["65:00.0", "0000:65:00.0"],
    ["0000:65:00.0", "0000:65:00.0"],
    ["0000:0A:1F.7", "0000:0a:1f.7"],
    ["ab:1c.3", "0000:ab:1c.3"],
    ["FFFF:ff:00.1", "ffff:ff:00.1"],
  ])("normalises address %s to %s", async (given, canonical) => {
    expect(normalisePciAddress(given)).toBe(canonical);
    const r = await pciPassthroughProvider.check({}, { ...base, address: given });
    expect(r.failures).toBeUndefined();
    expect(r.inputs.address).toBe(canonical);
  });

  it.each([
    "0000:00:20.0", // device > 0x1f
    "00:04.8", // function > 7
    "0:04.0",
    "000:00:04.0",
    "10000:00:04.0",
    "00:4.0",
    "00:04",
    "00-04.0",
    "0000:00:04.0 ",
    " 00:04.0",
    "00:04.0\n",
    "0000:00:04.0/../../x",
    "g0:04.0",
    "0x00:04.0",
    "pci-0000:00:04.0",
  ])("rejects address %j, naming the field", async (address) => {
    const failures = await failuresFor({ ...base, address });
    expect(failures.map((f) => f.property)).toEqual(["address"]);
    expect(failures[0].reason).toMatch(/^address: must be a PCI address: domain:bus:device.function/);
  });

  const stringFields: [string, (v: string) => Record<string, unknown>][] = [
    ["address", (v) => ({ ...base, address: v })],
    ["driver", (v) => ({ ...base, driver: v })],
    ["persistence", (v) => ({ ...base, persistence: v })],
  ];
  it.each(stringFields)("rejects at least 50 hostile values for %s", async (property, make) => {
    let rejected = 0;
    for (const v of HOSTILE_STRINGS) {
      const failures = await failuresFor(make(v));
      expect({ v, property: failures[0]?.property }).toEqual({ v, property });
      rejected++;
    }
    expect(rejected).toBeGreaterThanOrEqual(50);
  });

  it.each([
    [{ driver: "e1000" }, "driver", /driver: must be "vfio-pci"/],
    [{ driver: "" }, "driver", /driver: must be "vfio-pci"/],
    [{ includeIommuGroup: "yes" }, "includeIommuGroup", /includeIommuGroup: /],
    [{ force: 1 }, "force", /force: /],
    [{ persistence: "systemd" }, "persistence", /persistence: must be one of "auto"/],
    [{ name: "gpu" }, "(inputs)", /unknown field\(s\) "name"/],
    [{ address: undefined }, "address", /address: is required/],
  ])("rejects %j at %s", async (patch, property, reason) => {
    const failures = await failuresFor({ ...base, ...patch });
    expect(failures.map((f) => f.property)).toContain(property);
    expect(failures.map((f) => f.reason).join("\n")).toMatch(reason);
  });

  it("never echoes a secret in a failure", async () => {
    const failures = await failuresFor({ ...base, connection: { host: "h", password: "hunter2hunter2", privateKey: 7 }, address: "nope" });
    const text = JSON.stringify(failures);
    expect(failures.map((f) => f.property).sort()).toEqual(["address", "connection"]);
    expect(text).not.toContain("hunter2");
  });

  it("validates around unknown values during preview", async () => {
    const r = await pciPassthroughProvider.check({}, { ...base, address: UNKNOWN, force: "x" });
    expect(r.failures?.map((f) => f.property)).toEqual(["force"]);
    const ok = await pciPassthroughProvider.check({}, { connection: UNKNOWN, address: UNKNOWN });
    expect(ok.failures).toBeUndefined();
  });

  it("stored state may hold the driver the host had (drift), but never a path", () => {
    const stored = { ...base, includeIommuGroup: false, force: false, persistence: "runtime" };
    expect(pciPassthroughStoredSchema.parse({ ...stored, driver: "e1000" })).toMatchObject({ driver: "e1000", name: "0000:65:00.0" });
    expect(pciPassthroughStoredSchema.parse({ ...stored, driver: "" }).driver).toBe("");
    for (const bad of ["../e1000", "e1000 x", "..", "$(id)"]) expect(pciPassthroughStoredSchema.safeParse({ ...stored, driver: bad }).success).toBe(false);
  });
});

describe("PciPassthrough diff", () => {
  const olds = { ...base, driver: "vfio-pci", includeIommuGroup: false, force: false, persistence: "runtime", iommuGroup: 3, currentDriver: "vfio-pci" };
  it("reports no change when only outputs differ", async () => {
    const news = { ...base, driver: "vfio-pci", includeIommuGroup: false, force: false, persistence: "runtime" };
    expect(await pciPassthroughProvider.diff("id", olds, news)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });
  it("updates in place when a device was taken back (driver drift), and on includeIommuGroup / force", async () => {
    expect(await pciPassthroughProvider.diff("id", { ...olds, driver: "e1000" }, { ...olds })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    expect(await pciPassthroughProvider.diff("id", olds, { ...olds, includeIommuGroup: true })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    expect(await pciPassthroughProvider.diff("id", olds, { ...olds, force: true })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });
  it("replaces on another address (giving the old device back first) or another host", async () => {
    expect(await pciPassthroughProvider.diff("id", olds, { ...olds, address: "0000:66:00.0" })).toEqual({ changes: true, replaces: ["address"], deleteBeforeReplace: true });
    const moved = await pciPassthroughProvider.diff("id", olds, { ...olds, connection: { ...connection, host: "kvm2" } });
    expect(moved).toEqual({ changes: true, replaces: ["connection"], deleteBeforeReplace: false });
  });
});

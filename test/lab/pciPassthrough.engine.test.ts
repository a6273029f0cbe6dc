/**
 * The real Pulumi engine running examples/gpu-passthrough against a lab host
 * (testbed/labHost.ts): the e1000 at 00:04.0 is the "GPU". Needs root, the
 * lab image and the Pulumi CLI (scripts/install-pulumi.sh), and `npm run build`
 * first (the example loads dist/ through node_modules/pulumi-kvmnet).
 *
 * Properties of docs/TESTING.md shown here:
 *   P1 idempotence, P2 refresh and drift repair, P3 adoption, P4 destroy restores
 *   the host, P5 disappearance, P6 edits (update vs replace), P7 export/import,
 *   P8 no plaintext secret, P9 invalid input fails at preview without touching the host.
 * How they map onto a device binding:
 *   - P2: the device "taken back" (rebound to e1000 by hand) is drift of `driver`;
 *     up binds it again as an in-place update.
 *   - P3: a device someone bound to vfio-pci by hand is adopted; the state equals
 *     what create produces except `originalDriver`, which records what the host had
 *     (vfio-pci), so destroy leaves it on vfio-pci — P4's "as it was".
 *   - P5: what can disappear is the device itself (`remove` in sysfs, a hot
 *     unplug): refresh drops the resource and preview plans a create. Unbinding by
 *     hand is drift (P2), not disappearance: the device is still there.
 */
import * as path from "path";
import { ensurePulumi, REPO, Stack } from "../../testbed/engine";
import { bootLabHost, checkLabSupport, cleanupStaleLab, LabHost } from "../../testbed/labHost";

jest.setTimeout(30 * 60_000);

const DEVICE = "0000:00:04.0";
const OTHER = "0000:00:05.0";
const TYPE = "pulumi-nodejs:dynamic/kvmnet:PciPassthrough";

type StateDoc = { deployment: { resources?: { type: string; id?: string; outputs?: Record<string, unknown> }[] } };
const pciResources = (doc: StateDoc) => (doc.deployment.resources ?? []).filter((r) => r.type === TYPE);

let lab: LabHost;
let stack: Stack;
const timings: Record<string, number> = {};

async function driverOf(address: string): Promise<string> {
  return (await lab.exec(`d=$(readlink /sys/bus/pci/devices/${address}/driver) || d=; echo "\${d##*/}"`)).stdout.trim();
}

/** Each PCI device's driver and driver_override, the interfaces (name, MAC), /dev/vfio and our state dir. */
async function hostSnapshot(): Promise<string> {
  return (
    await lab.exec(
      'for d in /sys/bus/pci/devices/*; do l=$(readlink "$d/driver") || l=; echo "${d##*/} ${l##*/} $(cat "$d/driver_override")"; done; ' +
        "ip -br link | awk '{print $1, $3}' | sort; ls /dev/vfio; ls -R /run/kvmnet 2>/dev/null; true",
    )
  ).stdout;
}

/** SSH logins the guest's sshd accepted so far (the test's own exec connection is long-lived). */
async function acceptedLogins(): Promise<number> {
  return Number((await lab.exec("journalctl -u ssh -o cat --no-pager | grep -c 'Accepted publickey' || true")).stdout.trim());
}

async function timed<T>(key: string, f: () => Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await f();
  } finally {
    timings[key] = Date.now() - t;
  }
}

beforeAll(async () => {
  checkLabSupport();
  cleanupStaleLab();
  const bin = await ensurePulumi();
  lab = await bootLabHost();
  timings.bootMs = lab.bootMs;
  stack = new Stack(path.join(REPO, "examples", "gpu-passthrough"), `lab-pci-${process.pid}`, bin);
  await stack.init();
  await stack.connectTo(lab);
  // The short form: check normalises it, and the normalised value is what state keeps.
  await stack.setConfig("address", "00:04.0");
});

afterAll(async () => {
  await stack?.pulumi(["destroy", "--yes"]);
  await stack?.dispose();
  await lab?.shutdown();
  console.log(`pci engine timings: ${JSON.stringify(timings)}`);
});

describe("examples/gpu-passthrough under the real engine on a lab host", () => {
  let before: string;
  let created: Record<string, unknown>;

  it("P1: up binds the device and exports what a VM needs; nothing to do afterwards", async () => {
    before = await hostSnapshot();
    expect(await driverOf(DEVICE)).toBe("e1000");
    const logins = await acceptedLogins();
    await timed("upMs", () => stack.ok(["up", "--yes"]));
    expect((await acceptedLogins()) - logins).toBe(1);
    expect(await driverOf(DEVICE)).toBe("vfio-pci");
    const out = JSON.parse((await stack.ok(["stack", "output", "--json"])).stdout) as Record<string, unknown>;
    expect(out.address).toBe(DEVICE);
    expect(out.qemuDeviceArgs).toEqual(["-device", `vfio-pci,host=${DEVICE}`]);
    expect(out.libvirtHostdevXml).toContain("<address domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>");
    expect(out.originalDriver).toBe("e1000");
    await lab.exec(`test -c ${out.vfioDevice as string}`);
    // With secrets shown: the connection's ciphertext differs on every encryption.
    created = pciResources((await stack.exportState(true)).doc)[0].outputs!;
    expect(pciResources((await stack.exportState()).doc)[0].id).toBe(`127.0.0.1/pcipassthrough/${DEVICE}`);

    await timed("previewMs", () => stack.ok(["preview", "--expect-no-changes"]));
    await stack.ok(["up", "--yes", "--expect-no-changes"]);
    await timed("refreshMs", () => stack.ok(["refresh", "--yes", "--expect-no-changes"]));
  });

  it("P2: a device taken back by hand shows as drift of driver, and up binds it again", async () => {
    await lab.exec(
      `printf '\\n' > /sys/bus/pci/devices/${DEVICE}/driver_override && printf ${DEVICE} > /sys/bus/pci/drivers/vfio-pci/unbind && printf ${DEVICE} > /sys/bus/pci/drivers/e1000/bind`,
    );
    const drift = await stack.pulumi(["refresh", "--yes", "--expect-no-changes"]);
    expect(drift.code).not.toBe(0);
    expect(pciResources((await stack.exportState()).doc)[0]?.outputs).toMatchObject({ driver: "e1000", currentDriver: "e1000", vfioDevice: null });
    const steps = (await stack.previewSteps()).filter((s) => s.op !== "same");
    expect(steps).toEqual([{ op: "update", type: TYPE, name: "gpu", changedInputs: ["driver"] }]);
    await stack.ok(["up", "--yes"]);
    expect(await driverOf(DEVICE)).toBe("vfio-pci");
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  it("P6: includeIommuGroup and force are in-place updates; another address replaces, giving the old device back first", async () => {
    await stack.setConfig("includeIommuGroup", "true");
    expect((await stack.previewSteps()).filter((s) => s.op !== "same")).toEqual([{ op: "update", type: TYPE, name: "gpu", changedInputs: ["includeIommuGroup"] }]);
    await stack.ok(["up", "--yes"]);
    await stack.setConfig("force", "true");
    expect((await stack.previewSteps()).filter((s) => s.op !== "same")).toEqual([{ op: "update", type: TYPE, name: "gpu", changedInputs: ["force"] }]);
    await stack.ok(["up", "--yes"]);
    await stack.ok(["config", "rm", "includeIommuGroup"]);
    await stack.ok(["config", "rm", "force"]);
    await stack.ok(["up", "--yes"]);
    expect(await driverOf(DEVICE)).toBe("vfio-pci");
    await stack.ok(["preview", "--expect-no-changes"]);

    await stack.setConfig("address", OTHER);
    const ops = (await stack.previewSteps()).filter((s) => s.op !== "same").map((s) => s.op);
    expect(ops).toContain("replace");
    expect(ops.every((op) => ["replace", "delete-replaced", "create-replacement"].includes(op))).toBe(true);
    await stack.ok(["up", "--yes"]);
    expect(await driverOf(DEVICE)).toBe("e1000");
    expect(await driverOf(OTHER)).toBe("vfio-pci");
    await stack.setConfig("address", DEVICE);
    await stack.ok(["up", "--yes"]);
    expect(await driverOf(OTHER)).toBe("virtio-pci");
    expect(await driverOf(DEVICE)).toBe("vfio-pci");
    await stack.ok(["preview", "--expect-no-changes"]);
  });

  it("P5: the device removed from the host: refresh drops the resource, preview plans a create, up binds it again once it is back", async () => {
    await lab.exec(`echo 1 > /sys/bus/pci/devices/${DEVICE}/remove`);
    const refreshed = await stack.ok(["refresh", "--yes"]);
    expect(refreshed.stdout).toMatch(/gpu\s+deleted/);
    expect(pciResources((await stack.exportState()).doc)).toEqual([]);
    expect((await stack.previewSteps()).filter((s) => s.op !== "same").map((s) => s.op)).toEqual(["create"]);
    await lab.exec("echo 1 > /sys/bus/pci/rescan");
    expect(await driverOf(DEVICE)).toBe("e1000");
    await stack.ok(["up", "--yes"]);
    expect(await driverOf(DEVICE)).toBe("vfio-pci");
    expect(pciResources((await stack.exportState(true)).doc)[0]?.outputs).toEqual(created);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  it("P9: an invalid address fails at preview naming the field, and no SSH login reaches the host", async () => {
    await stack.setConfig("address", "00:04.0;reboot");
    const logins = await acceptedLogins();
    const bad = await stack.pulumi(["preview"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/kvmnet:PciPassthrough[\s\S]*gpu[\s\S]*address/);
    expect(bad.stdout + bad.stderr).toMatch(/address: must be a PCI address/);
    expect(await acceptedLogins()).toBe(logins);
    await stack.setConfig("address", "00:04.0");
    await stack.ok(["preview", "--expect-no-changes"]);
  });

  it("P8 and P7: no plaintext secret in the state; export | import round-trips", async () => {
    const { exported, plainBefore, reimported } = await stack.exportImport();
    for (const line of lab.privateKey.split("\n").filter((l) => l && !l.startsWith("-----"))) expect(exported.text).not.toContain(line);
    expect(exported.text).toContain("ciphertext");
    expect(pciResources(reimported.doc)).toEqual(pciResources(plainBefore.doc));
    expect(pciResources(reimported.doc)).toHaveLength(1);
    await stack.ok(["preview", "--expect-no-changes"]);
  });

  it("P4: destroy leaves the host as it was before up", async () => {
    await timed("destroyMs", () => stack.ok(["destroy", "--yes"]));
    expect(await driverOf(DEVICE)).toBe("e1000");
    expect(await hostSnapshot()).toBe(before);
  });

  it("P3: a device bound to vfio-pci by hand is adopted, and destroy leaves it on vfio-pci", async () => {
    await lab.exec(
      `echo vfio-pci > /sys/bus/pci/devices/${DEVICE}/driver_override && printf ${DEVICE} > /sys/bus/pci/devices/${DEVICE}/driver/unbind && printf ${DEVICE} > /sys/bus/pci/drivers_probe`,
    );
    try {
      const byHand = await hostSnapshot();
      await stack.ok(["up", "--yes"]);
      const adopted = pciResources((await stack.exportState(true)).doc)[0].outputs!;
      expect(adopted).toEqual({ ...created, originalDriver: "vfio-pci" });
      await stack.ok(["preview", "--expect-no-changes"]);
      await stack.ok(["destroy", "--yes"]);
      expect(await hostSnapshot()).toBe(byHand);
    } finally {
      await lab.exec(
        `printf '\\n' > /sys/bus/pci/devices/${DEVICE}/driver_override; printf ${DEVICE} > /sys/bus/pci/drivers/vfio-pci/unbind; printf ${DEVICE} > /sys/bus/pci/drivers/e1000/bind`,
        { allowFail: true },
      );
    }
    expect(await hostSnapshot()).toBe(before);
  });
});

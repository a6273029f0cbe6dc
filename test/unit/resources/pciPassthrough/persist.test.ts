import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { manifestPath, persistDrift, persistSteps, PersistSet, withPersistence } from "../../../../provider/persist";
import { bootScriptPath, pciPersist, udevRulePath, unitPath, unitWantsLink, pciDisarmSteps } from "../../../../provider/resources/pciPassthrough/persist";
import { heldState, planPci, planPciDelete, stateFilePath } from "../../../../provider/resources/pciPassthrough/plan";
import { parsePciView } from "../../../../provider/resources/pciPassthrough/observe";
import { renderPciPlan } from "../../../../provider/resources/pciPassthrough/render";
import { PciPassthroughInputs, pciPassthroughStoredSchema } from "../../../../provider/resources/pciPassthrough/schema";
import { expectKvmnetThrow } from "../../../support/expectError";

// The lab host's snapshot (see plan.test.ts): 00:04.0 e1000 eth2 (group 3);
// group 7 = pcie-pci-bridge 01:00.0 + e1000s 02:01.0 (eth3) and 02:02.0 (eth4).
const PRISTINE = fs.readFileSync(path.join(__dirname, "fixtures", "lab-pristine.txt"), "utf8");
const snapOf = (text: string): HostSnapshot => parseSnapshot(text, "fixture");
const withDev = (text: string, address: string, driver: string, override = "(null)") =>
  text.replace(new RegExp(`^dev ${address} (\\S+ \\S+ \\S+) \\S+ (\\S+) .*$`, "m"), `dev ${address} $1 ${driver} $2 ${override}`);
const withState = (text: string, address: string, json: string) =>
  text.replace("@@kvmnet-begin state\n", `@@kvmnet-begin state\n@@kvmnet-file ${stateFilePath(address)}\n${json}\n`);
const withSystemd = (text: string, yes: boolean) => text.replace(/@@kvmnet-begin systemd\n[^\n]*\n/, `@@kvmnet-begin systemd\n${yes ? "yes" : "no"}\n`);
/** The host with the persisted files of `set` on disk and listed in the manifest (as the observe script prints them). */
const withFiles = (text: string, name: string, set: PersistSet, drop: string[] = []) => {
  const lines = [`@@manifest ${manifestPath("pcipassthrough", name)}`];
  for (const f of set.files) {
    if (drop.includes(f.path)) lines.push(`@@missing ${f.path}`);
    else if (f.link !== undefined) lines.push(`@@link ${f.path} ${f.link}`);
    else lines.push(`@@file ${f.path} ${Buffer.from(f.content!.endsWith("\n") ? f.content! : f.content + "\n").toString("base64")}`);
  }
  return `${text}\n@@kvmnet-begin persist\n${lines.join("\n")}\n@@kvmnet-end persist 0\n`;
};

const inputs = (over: Partial<PciPassthroughInputs> & { address: string }): PciPassthroughInputs =>
  pciPassthroughStoredSchema.parse({ connection: { host: "h" }, persistence: "auto", ...over });

const E1000 = "0000:00:04.0";
const fileOf = (set: PersistSet, p: string) => set.files.find((f) => f.path === p);

/** The host after the live bind of `desired` from PRISTINE: devices on vfio-pci (override set), the planned state file written. */
function afterBind(desired: PciPassthroughInputs): string {
  const plan = planPci(desired, snapOf(PRISTINE));
  const write = plan.actions.find((a) => a.op === "writeState");
  if (write?.op !== "writeState") throw new Error("no state written");
  let text = PRISTINE;
  for (const d of write.state.devices) text = withDev(text, d.address, "vfio-pci", "vfio-pci");
  return withState(text, desired.address, JSON.stringify({ address: write.state.address, devices: write.state.devices }));
}

describe("PciPassthrough persistence files", () => {
  const e1000 = inputs({ address: E1000 });
  const set = pciPersist(e1000, "ifupdown", snapOf(PRISTINE));

  it("are a udev rule, a boot script, a oneshot unit and its sysinit.target.wants link, named by the address", () => {
    expect(set.files.map((f) => [f.path, f.link ?? f.mode ?? "0644"])).toEqual([
      ["/etc/udev/rules.d/40-kvmnet-vfio-0000:00:04.0.rules", "0644"],
      ["/etc/kvmnet/vfio-0000:00:04.0.sh", "0755"],
      ["/etc/systemd/system/kvmnet-vfio-0000:00:04.0.service", "0644"],
      ["/etc/systemd/system/sysinit.target.wants/kvmnet-vfio-0000:00:04.0.service", "/etc/systemd/system/kvmnet-vfio-0000:00:04.0.service"],
    ]);
  });

  it("the udev rule sets driver_override on the add event, loads vfio-pci and probes the device", () => {
    const rule = fileOf(set, udevRulePath(E1000))!.content!;
    const lines = rule.split("\n").filter((l) => !l.startsWith("#"));
    expect(lines).toEqual([
      `ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:00:04.0", ATTR{driver_override}="vfio-pci", RUN{builtin}+="kmod load vfio-pci", RUN+="/bin/sh -c 'echo $kernel > /sys/bus/pci/drivers_probe'"`,
    ]);
    expect(rule).toMatch(/^# Written by pulumi-kvmnet for PciPassthrough 0000:00:04.0\./);
  });

  it("the unit runs the script early: no default dependencies, after udev's coldplug trigger, before sysinit.target", () => {
    expect(fileOf(set, unitPath(E1000))!.content).toBe(
      [
        "# Written by pulumi-kvmnet for PciPassthrough 0000:00:04.0. Edits here are reported as drift and replaced.",
        "[Unit]",
        "Description=kvmnet: bind PCI 0000:00:04.0 to vfio-pci for passthrough",
        "DefaultDependencies=no",
        "After=local-fs.target systemd-modules-load.service systemd-udev-trigger.service",
        "Before=sysinit.target shutdown.target",
        "Conflicts=shutdown.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/bin/sh /etc/kvmnet/vfio-0000:00:04.0.sh",
        "",
        "[Install]",
        "WantedBy=sysinit.target",
      ].join("\n"),
    );
  });

  it("the boot script is valid sh doing the live bind's steps, and writes the state file the live bind writes", () => {
    const script = fileOf(set, bootScriptPath(E1000))!.content!;
    execFileSync("sh", ["-n"], { input: script });
    expect(script.startsWith("#!/bin/sh\n")).toBe(true);
    // The live plan's state file, byte for byte: a refresh after the reboot sees what it saw after the bind.
    const live = renderPciPlan(planPci(e1000, snapOf(PRISTINE))).steps[0].run.text;
    const stateJson = '{"address":"0000:00:04.0","devices":[{"address":"0000:00:04.0","originalDriver":"e1000","originalOverride":null,"originalInterfaces":["eth2"]}]}';
    expect(live).toContain(`\n${stateJson}\n`);
    expect(script).toContain(`cat > '/run/kvmnet/state/pci/0000:00:04.0.json.tmp') <<'KVMNET_EOF'\n${stateJson}\nKVMNET_EOF\n`);
    expect(script).toContain("[ -d '/sys/bus/pci/drivers/vfio-pci' ] || modprobe 'vfio-pci'");
    expect(script).toContain("printf '%s\\n' 'vfio-pci' > '/sys/bus/pci/devices/0000:00:04.0/driver_override'");
    // Another driver that got there first (initramfs, built in) is unbound, then the device probed.
    expect(script).toContain(
      "[ ! -e '/sys/bus/pci/devices/0000:00:04.0/driver' ] || printf '%s' '0000:00:04.0' > '/sys/bus/pci/devices/0000:00:04.0/driver/unbind'; printf '%s' '0000:00:04.0' > '/sys/bus/pci/drivers_probe'",
    );
    expect(script).toContain("kvmnet: 0000:00:04.0 is not on vfio-pci");
    expect(script.trimEnd().endsWith('exit "$kvmnet_rc"')).toBe(true);
    // The state file comes first: after a boot where binding failed, a refresh shows the drift rather than "gone".
    expect(script.indexOf("/run/kvmnet/state/pci")).toBeLessThan(script.indexOf("driver_override"));
  });

  it("with includeIommuGroup cover every endpoint of the group (not the bridge)", () => {
    const group = pciPersist(inputs({ address: "0000:02:01.0", includeIommuGroup: true }), "networkd", snapOf(PRISTINE));
    const rule = fileOf(group, udevRulePath("0000:02:01.0"))!.content!;
    expect(
      rule
        .split("\n")
        .filter((l) => l.startsWith("ACTION"))
        .map((l) => /KERNEL=="([^"]+)"/.exec(l)![1]),
    ).toEqual(["0000:02:01.0", "0000:02:02.0"]);
    const script = fileOf(group, bootScriptPath("0000:02:01.0"))!.content!;
    execFileSync("sh", ["-n"], { input: script });
    for (const a of ["0000:02:01.0", "0000:02:02.0"]) expect(script).toContain(`printf '%s\\n' 'vfio-pci' > '/sys/bus/pci/devices/${a}/driver_override'`);
    expect(script).not.toContain("0000:01:00.0");
    expect(fileOf(group, unitPath("0000:02:01.0"))!.content).toContain("Description=kvmnet: bind PCI 0000:02:01.0 0000:02:02.0 to vfio-pci");
  });

  it("do not depend on the backend: every persisting backend writes the same files", () => {
    for (const b of ["networkmanager", "networkd"] as const) expect(pciPersist(e1000, b, snapOf(PRISTINE))).toEqual(set);
  });

  it("need systemd (the unit), and say so", () => {
    expectKvmnetThrow(
      () => pciPersist(e1000, "ifupdown", snapOf(withSystemd(PRISTINE, false))),
      "Unsupported",
      /pcipassthrough 0000:00:04.0: persistence "ifupdown" needs systemd/,
    );
  });
});

describe("PciPassthrough persistence across create, read and reboot", () => {
  const e1000 = inputs({ address: E1000 });
  const beforeCreate = pciPersist(e1000, "ifupdown", snapOf(PRISTINE));

  it("renders the same files after the bind as before it, so read after create shows no drift", () => {
    const bound = afterBind(e1000);
    expect(pciPersist(e1000, "ifupdown", snapOf(bound))).toEqual(beforeCreate);
    expect(persistDrift("pcipassthrough", E1000, beforeCreate, snapOf(withFiles(bound, E1000, beforeCreate)))).toEqual([]);
    // A group too: both records kept once both devices are on vfio-pci.
    const group = inputs({ address: "0000:02:01.0", includeIommuGroup: true });
    expect(pciPersist(group, "ifupdown", snapOf(afterBind(group)))).toEqual(pciPersist(group, "ifupdown", snapOf(PRISTINE)));
  });

  it("keeps the recorded originals after a boot where another driver got the device first (our driver_override still on it)", () => {
    // The boot script wrote the state; e1000 from the initramfs holds the device, the rule's override is set.
    const boundFirst = withDev(afterBind(e1000), E1000, "e1000", "vfio-pci");
    expect(heldState(e1000, parsePciView(snapOf(boundFirst)), snapOf(boundFirst))).toEqual(heldState(e1000, parsePciView(snapOf(afterBind(e1000))), snapOf(afterBind(e1000))));
    expect(pciPersist(e1000, "ifupdown", snapOf(boundFirst))).toEqual(beforeCreate);
    // The next update binds it again without rewriting the state: the original stays e1000, override none.
    expect(planPci(e1000, snapOf(boundFirst)).actions).toEqual([{ op: "loadVfio" }, { op: "bind", address: E1000, from: "e1000", override: "vfio-pci" }]);
  });

  it("reports a rule removed by hand as drift, and the next update writes it back (and reloads udev)", () => {
    const bound = afterBind(e1000);
    const missing = snapOf(withFiles(bound, E1000, beforeCreate, [udevRulePath(E1000)]));
    expect(persistDrift("pcipassthrough", E1000, beforeCreate, missing)).toEqual([`${udevRulePath(E1000)} is missing`]);
    const steps = persistSteps("pcipassthrough", E1000, pciPersist(e1000, "ifupdown", missing), missing);
    expect(steps.map((s) => s.description)).toEqual(["note the stack's configuration reload", `write ${udevRulePath(E1000)}`, "reload the stack's view of the persisted files"]);
    expect(steps[2].run.text).toContain("udevadm control --reload");
    // The live plan has nothing to do: the device is bound.
    expect(planPci(e1000, missing)).toEqual({ guards: [], actions: [] });
  });

  it("delete removes all four files, then the manifest", () => {
    const snap = snapOf(withFiles(afterBind(e1000), E1000, beforeCreate));
    expect(persistSteps("pcipassthrough", E1000, { files: [] }, snap).map((s) => s.description)).toEqual([
      "note the stack's configuration reload",
      `remove ${udevRulePath(E1000)}`,
      `remove ${bootScriptPath(E1000)}`,
      `remove ${unitPath(E1000)}`,
      `remove ${unitWantsLink(E1000)}`,
      `remove ${manifestPath("pcipassthrough", E1000)}`,
      "reload the stack's view of the persisted files",
    ]);
  });

  it("delete stops the boot unit after the devices went back: a oneshot with RemainAfterExit stays active without its file until the next boot", () => {
    const snap = snapOf(withFiles(afterBind(e1000), E1000, beforeCreate));
    const steps = withPersistence(renderPciPlan(planPciDelete(e1000, snap)), pciDisarmSteps(e1000, snap, true)).steps;
    const stop = steps.findIndex((s) => s.description === "stop boot unit kvmnet-vfio-0000:00:04.0.service");
    expect(stop).toBe(steps.length - 1);
    const giveBack = steps.findIndex((s) => s.description === `give ${E1000} back to e1000`);
    expect(giveBack).toBeGreaterThanOrEqual(0);
    expect(giveBack).toBeLessThan(stop);
    expect(steps[stop].run.text).toBe("systemctl stop 'kvmnet-vfio-0000:00:04.0.service' && { systemctl reset-failed 'kvmnet-vfio-0000:00:04.0.service' 2>/dev/null; true; }");
    // A binding that never persisted has no unit to stop.
    const runtimeOnly = snapOf(afterBind(e1000));
    expect(withPersistence(renderPciPlan(planPciDelete(e1000, runtimeOnly)), pciDisarmSteps(e1000, runtimeOnly, true)).steps.map((s) => s.description)).not.toContainEqual(
      expect.stringMatching(/^stop boot unit/),
    );
  });

  it('an update to persistence "runtime" stops the boot unit; one that keeps persisting does not', () => {
    const persisted = withFiles(afterBind(e1000), E1000, beforeCreate);
    const toRuntime = { ...e1000, persistence: "runtime" as const };
    const snap = snapOf(persisted);
    expect(withPersistence(renderPciPlan(planPci(toRuntime, snap)), pciDisarmSteps(toRuntime, snap, false)).steps.map((s) => s.description)).toEqual([
      "stop boot unit kvmnet-vfio-0000:00:04.0.service",
    ]);
    const onNetworkd = snapOf(persisted.replace("@@kvmnet-begin persist\n", "@@kvmnet-begin persist\nactive systemd-networkd active\n"));
    expect(withPersistence(renderPciPlan(planPci(e1000, onNetworkd)), pciDisarmSteps(e1000, onNetworkd, false)).steps).toEqual([]);
  });
});

/**
 * PciPassthrough bindings survive a real reboot of the lab host (testbed/labHost.ts,
 * q35 + intel-iommu, an e1000 at 00:04.0 and two e1000s sharing IOMMU group with a
 * PCIe-to-PCI bridge), through the boot-time udev rule and unit of
 * provider/resources/pciPassthrough/persist.ts, driven through the provider's
 * lifecycle over SSH as the engine calls it.
 *
 * The guest boots with `blacklist=e1000`, which initramfs-tools applies inside the
 * initramfs only (scripts/init-top/blacklist): the lab's initramfs (MODULES=most)
 * carries e1000.ko, and would otherwise bind every e1000 before the root
 * filesystem, and our rule, exist. With it the guest is a host whose initramfs does
 * not carry the passed-through device's driver, where the rule alone must keep the
 * host driver off the device, while that driver IS loaded (for the other e1000s, by
 * the root filesystem's udev). The second VM boots the lab's initramfs as it is:
 * e1000 binds the device there, before our rule exists, and the unit must move it
 * to vfio-pci before sysinit.target.
 *
 * Two VMs, one after the other (three reboots). Needs root; under CI=true a machine
 * that cannot run lab hosts fails here (checkLabSupport throws), never skips.
 */
import { closeAllConnections } from "../../provider/host";
import { pciPassthroughProvider as provider } from "../../provider/resources/pciPassthrough";
import { bootScriptPath, udevRulePath, unitName, unitPath, unitWantsLink } from "../../provider/resources/pciPassthrough/persist";
import { bootLabHost, checkLabSupport, cleanupStaleLab, LabHost } from "../../testbed/labHost";
import { createThrough, driverOf } from "./persistSupport";

jest.setTimeout(45 * 60_000);

const E1000 = "0000:00:04.0";
const GROUP_A = "0000:02:01.0";
const GROUP_B = "0000:02:02.0";
const GROUP_BRIDGE = "0000:01:00.0";
const ALL_E1000 = [E1000, GROUP_A, GROUP_B];

const timings: Record<string, number> = {};
afterAll(() => {
  console.log(`pci persistence lab timings: ${JSON.stringify(timings)}`);
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function overrideOf(h: LabHost, address: string): Promise<string> {
  return (await h.exec(`cat /sys/bus/pci/devices/${address}/driver_override`)).stdout.trim();
}

async function bootId(h: LabHost): Promise<string> {
  return (await h.exec("cat /proc/sys/kernel/random/boot_id")).stdout.trim();
}

/** Kernel log lines of this boot with which the e1000 driver announced a device it bound ("e1000 0000:00:04.0 eth2: …"). */
async function e1000Probes(h: LabHost): Promise<string[]> {
  const out = (await h.exec("dmesg | grep -E 'e1000 [0-9a-f]{4}:' || true")).stdout.trim();
  return out === "" ? [] : out.split("\n");
}
const probedAddresses = (lines: string[]) => [...new Set(lines.map((l) => /e1000 ([0-9a-f:.]+)/.exec(l)?.[1]).filter(Boolean))].sort();

/** Everything of ours under /etc, and the link farm we write into. */
const OUR_FILES = "ls -A /etc/udev/rules.d /etc/systemd/system/sysinit.target.wants; ls /etc/systemd/system | grep kvmnet; ls -AR /etc/kvmnet 2>/dev/null; true";

/** Each PCI device's driver and driver_override, interface names and MACs, /dev/vfio, our /run state. */
async function pciSnapshot(h: LabHost): Promise<string> {
  return (
    await h.exec(
      'for d in /sys/bus/pci/devices/*; do l=$(readlink "$d/driver") || l=; echo "${d##*/} ${l##*/} $(cat "$d/driver_override")"; done; ' +
        "ip -br link | awk '{print $1, $3}' | sort; ls /dev/vfio; ls -R /run/kvmnet 2>/dev/null; true",
    )
  ).stdout;
}

/**
 * Reboot the guest and wait until SSH answers from the new boot: LabHost.reboot
 * when the harness has it, else `systemctl reboot` from a transient timer (so
 * the SSH command returns first) and a wait for a new boot id.
 */
async function reboot(h: LabHost): Promise<number> {
  closeAllConnections(); // the provider's SSH connection dies with the old boot
  const before = await bootId(h);
  const t = Date.now();
  const harness = (h as Partial<LabHost>).reboot;
  if (harness) {
    const r = await harness.call(h);
    // Where the reboot's time went (host clock; a measurement, not an assertion).
    console.log(`reboot phases: ${JSON.stringify(r.phases)}`);
  } else {
    await h.exec("systemd-run --on-active=1 systemctl reboot");
    const deadline = Date.now() + 10 * 60_000;
    for (;;) {
      await sleep(3000);
      try {
        await h.waitForSsh(Math.max(10_000, deadline - Date.now()));
        if ((await bootId(h)) !== before) break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
      }
    }
  }
  expect(await bootId(h)).not.toBe(before);
  return Date.now() - t;
}

/** How the boot unit of `address` ended (systemctl show prints properties in its own order). */
async function unitOutcome(h: LabHost, address: string): Promise<Record<string, string>> {
  const out = (await h.exec(`systemctl show -p ActiveState -p Result ${unitName(address)}`)).stdout.trim();
  return Object.fromEntries(out.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

/** When `unit` became active in this boot, in µs since boot (0: never). */
async function activeSince(h: LabHost, unit: string): Promise<number> {
  return Number((await h.exec(`systemctl show -p ActiveEnterTimestampMonotonic --value ${unit}`)).stdout.trim());
}

/** The stack "auto" should pick on the guest, from systemd's own view. */
async function expectedBackend(h: LabHost): Promise<string> {
  const active = async (u: string) => (await h.exec(`systemctl is-active ${u} || true`)).stdout.trim() === "active";
  if (await active("NetworkManager")) return "networkmanager";
  if (await active("systemd-networkd")) return "networkd";
  return "ifupdown";
}

describe("PciPassthrough persistence on the lab host (initramfs without e1000)", () => {
  let h: LabHost;

  beforeAll(async () => {
    checkLabSupport();
    cleanupStaleLab();
    // Cold, no snapshot: a boot with e1000 blacklisted is what this persistence proof
    // starts from, and no other test boots this configuration (#15).
    h = await bootLabHost({ groupedNics: true, kernelArgs: ["blacklist=e1000"], snapshot: false });
    timings.bootMs = h.bootMs;
  });

  afterAll(async () => {
    closeAllConnections();
    await h?.shutdown();
  });

  it("binds at boot before sysinit.target with no drift and the host driver never binds; a removed rule is drift that update repairs; delete leaves nothing, also after a reboot", async () => {
    // The first boot, nothing of ours: every e1000 on e1000, bound by the root filesystem's udev.
    const pristine = await pciSnapshot(h);
    const pristineFiles = (await h.exec(OUR_FILES)).stdout;
    for (const a of ALL_E1000) expect(await driverOf(h, a)).toBe("e1000");
    expect(probedAddresses(await e1000Probes(h))).toEqual([...ALL_E1000].sort());
    const backend = await expectedBackend(h);

    // Bind the single e1000 and the group, persisted.
    let t = Date.now();
    const single = await createThrough(provider, h, { address: E1000, persistence: "auto" });
    timings.createMs = Date.now() - t;
    const group = await createThrough(provider, h, { address: GROUP_A, includeIommuGroup: true, persistence: "auto" });
    expect(single.outs).toMatchObject({ driver: "vfio-pci", originalDriver: "e1000", persistence: "auto", persistedBy: backend, persistenceDrift: [] });
    expect(group.outs).toMatchObject({ driver: "vfio-pci", boundDevices: [GROUP_A, GROUP_B], persistedBy: backend, persistenceDrift: [] });
    for (const a of ALL_E1000) expect(await driverOf(h, a)).toBe("vfio-pci");
    expect((await h.exec(`cat /etc/kvmnet/owned/pcipassthrough/${E1000}`)).stdout.trim().split("\n")).toEqual([
      udevRulePath(E1000),
      bootScriptPath(E1000),
      unitPath(E1000),
      unitWantsLink(E1000),
    ]);
    expect((await h.exec(`readlink ${unitWantsLink(E1000)}`)).stdout.trim()).toBe(unitPath(E1000));
    expect((await h.exec(`systemctl is-enabled ${unitName(E1000)} ${unitName(GROUP_A)}`)).stdout.trim().split("\n")).toEqual(["enabled", "enabled"]);
    // systemd's own linter on the unit (printed: a measurement). `systemd-analyze verify`
    // reads "path:alias" in its arguments, so it is given a copy under a name without colons.
    const verify = await h.exec(
      `d=$(mktemp -d) && cp ${unitPath(E1000)} "$d/kvmnet-vfio-lint.service" && systemd-analyze verify "$d/kvmnet-vfio-lint.service" 2>&1; rc=$?; rm -rf "$d"; exit $rc`,
      { allowFail: true },
    );
    console.log(`systemd-analyze verify: exit ${verify.code} ${JSON.stringify(verify.stdout.trim())}`);
    t = Date.now();
    const read0 = await provider.read(single.id, single.outs);
    timings.readMs = Date.now() - t;
    expect(read0.props).toEqual(single.outs);
    expect((await provider.read(group.id, group.outs)).props).toEqual(group.outs);

    // Reboot: the rule keeps e1000 off all three devices although the module is loaded; the unit ran before sysinit.target.
    timings.reboot1Ms = await reboot(h);
    for (const a of ALL_E1000) expect(await driverOf(h, a)).toBe("vfio-pci");
    expect(await driverOf(h, GROUP_BRIDGE)).toBe("");
    expect((await h.exec("grep -c '^e1000 ' /proc/modules || true")).stdout.trim()).toBe("1");
    expect(await e1000Probes(h)).toEqual([]);
    for (const a of [E1000, GROUP_A]) {
      const [unit, sysinit] = [await activeSince(h, unitName(a)), await activeSince(h, "sysinit.target")];
      expect(await unitOutcome(h, a)).toEqual({ ActiveState: "active", Result: "success" });
      expect(unit).toBeGreaterThan(0);
      expect(unit).toBeLessThanOrEqual(sysinit);
      expect(sysinit).toBeGreaterThan(0);
      timings[`unitActiveAtMs_${a}`] = Math.round(unit / 1000);
      timings[`sysinitActiveAtMs_${a}`] = Math.round(sysinit / 1000);
    }
    const read1 = await provider.read(single.id, single.outs);
    expect(read1.props).toEqual(single.outs);
    expect((await provider.read(group.id, group.outs)).props).toEqual(group.outs);

    // The rule removed by hand is drift; the next update writes it back.
    await h.exec(`rm ${udevRulePath(E1000)}`);
    const drifted = await provider.read(single.id, single.outs);
    expect(drifted.props).toMatchObject({ driver: "vfio-pci", persistenceDrift: [`${udevRulePath(E1000)} is missing`], persistence: "runtime" });
    expect(await provider.diff(single.id, drifted.props, single.inputs)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    const repaired = await provider.update(single.id, drifted.props, single.inputs);
    expect(repaired.outs).toEqual(single.outs);
    expect((await provider.read(single.id, repaired.outs)).props).toEqual(single.outs);
    await h.exec(`test -f ${udevRulePath(E1000)}`);

    // Delete: devices back on e1000 at once, every file of ours gone.
    t = Date.now();
    await provider.delete(single.id, repaired.outs);
    timings.deleteMs = Date.now() - t;
    await provider.delete(group.id, group.outs);
    for (const a of ALL_E1000) {
      expect(await driverOf(h, a)).toBe("e1000");
      expect(await overrideOf(h, a)).toBe("(null)");
    }
    expect((await h.exec(OUR_FILES)).stdout).toBe(pristineFiles);
    expect((await h.exec("ls -d /etc/kvmnet /run/kvmnet 2>/dev/null || true")).stdout.trim()).toBe("");
    // The oneshot units were stopped, not left "active" without their files until the next boot.
    expect((await h.exec(`systemctl list-units --all --no-legend 'kvmnet-vfio-*' | wc -l`)).stdout.trim()).toBe("0");

    // Reboot: nothing binds them to vfio-pci any more; the host is as on its first boot.
    timings.reboot2Ms = await reboot(h);
    for (const a of ALL_E1000) {
      expect(await driverOf(h, a)).toBe("e1000");
      expect(await overrideOf(h, a)).toBe("(null)");
    }
    expect(probedAddresses(await e1000Probes(h))).toEqual([...ALL_E1000].sort());
    expect((await h.exec(`systemctl list-units --all --no-legend 'kvmnet-vfio-*' | wc -l`)).stdout.trim()).toBe("0");
    expect(await pciSnapshot(h)).toBe(pristine);
    expect((await provider.read(single.id, single.outs)).id).toBe("");
  });
});

describe("PciPassthrough persistence on the lab host (e1000 in the initramfs)", () => {
  let h: LabHost;

  beforeAll(async () => {
    h = await bootLabHost();
    timings.initramfsBootMs = h.bootMs;
  });

  afterAll(async () => {
    closeAllConnections();
    await h?.shutdown();
  });

  it("the unit moves a device the initramfs driver bound to vfio-pci before sysinit.target; read shows no drift", async () => {
    expect(await driverOf(h, E1000)).toBe("e1000");
    const { id, outs, inputs: checked } = await createThrough(provider, h, { address: E1000, persistence: "auto" });
    expect(outs).toMatchObject({ driver: "vfio-pci", persistedBy: await expectedBackend(h), persistenceDrift: [] });

    timings.initramfsRebootMs = await reboot(h);
    // e1000 bound it during this boot (from the initramfs); now vfio-pci holds it.
    expect(probedAddresses(await e1000Probes(h))).toEqual([E1000]);
    expect(await driverOf(h, E1000)).toBe("vfio-pci");
    const [unit, sysinit] = [await activeSince(h, unitName(E1000)), await activeSince(h, "sysinit.target")];
    expect(await unitOutcome(h, E1000)).toEqual({ ActiveState: "active", Result: "success" });
    expect(unit).toBeGreaterThan(0);
    expect(unit).toBeLessThanOrEqual(sysinit);
    timings.initramfsUnitActiveAtMs = Math.round(unit / 1000);
    timings.initramfsSysinitActiveAtMs = Math.round(sysinit / 1000);
    console.log(
      `initramfs boot: ${(await h.exec(`journalctl -b -o short-monotonic --no-pager -k | grep -E 'e1000 ${E1000}|Run /init|switch' | head -5; journalctl -b -o short-monotonic --no-pager -u ${unitName(E1000)}`)).stdout}`,
    );
    expect((await provider.read(id, outs)).props).toEqual(outs);

    await provider.delete(id, outs);
    expect(await driverOf(h, E1000)).toBe("e1000");
    expect(await overrideOf(h, E1000)).toBe("(null)");
    expect((await h.exec("ls -d /etc/kvmnet /run/kvmnet 2>/dev/null || true")).stdout.trim()).toBe("");
    expect(checked.persistence).toBe("auto");
  });
});

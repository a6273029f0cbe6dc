/**
 * PciPassthrough actions → shell steps (values quoted by shell.ts only).
 *
 * Binding follows the kernel's documented way (Documentation/ABI/testing/
 * sysfs-bus-pci, driver_override): write the driver's name to driver_override,
 * unbind from the current driver, then `drivers_probe`, which can only match
 * the overriding driver. Writing an empty line clears driver_override. Every
 * step has an undo that puts back what it changed, so a failure half-way
 * gives every device back to the driver it had.
 */
import { KvmnetError } from "../../errors";
import { STATE_DIR } from "../../observe";
import { Guard, Plan, Step } from "../../render";
import { joinLines, literal, Script, sh, writeFile } from "../../shell";
import { PCI_STATE_DIR, PciAction, PciGuard, PciPlan, PciState, stateFilePath } from "./plan";
import { CANONICAL_PCI_ADDRESS, VFIO_PCI } from "./schema";

const PCI_DEVICES = "/sys/bus/pci/devices";
const PCI_DRIVERS = "/sys/bus/pci/drivers";
const DRIVERS_PROBE = "/sys/bus/pci/drivers_probe";

/** Second fence (schemas and the observe parser are the first): values that become sysfs paths. */
function address(a: string): string {
  if (!CANONICAL_PCI_ADDRESS.test(a)) throw new KvmnetError({ kind: "Bug", message: `not a canonical PCI address: ${JSON.stringify(a)}` });
  return a;
}
function driverDir(name: string): string {
  if (!/^[A-Za-z0-9_.+-]{1,64}$/.test(name) || name === "." || name === "..") {
    throw new KvmnetError({ kind: "Bug", message: `not a driver name: ${JSON.stringify(name)}` });
  }
  return `${PCI_DRIVERS}/${name}`;
}
const devFile = (a: string, file: string) => `${PCI_DEVICES}/${address(a)}/${file}`;

/** Succeeds when device `a` is bound to `driver` ("" = to no driver). */
function driverIs(a: string, driver: string): Script {
  return sh`kvmnet_l=$(readlink ${devFile(a, "driver")} 2>/dev/null) || kvmnet_l=; [ "\${kvmnet_l##*/}" = ${driver} ]`;
}

/** driver_override := `value`; null clears it (an empty line). */
function writeOverride(a: string, value: string | null): Script {
  return value === null ? sh`printf '\\n' > ${devFile(a, "driver_override")}` : sh`printf '%s\\n' ${value} > ${devFile(a, "driver_override")}`;
}

const unbindIfBound = (a: string) => sh`[ ! -e ${devFile(a, "driver")} ] || printf '%s' ${a} > ${devFile(a, "driver/unbind")}`;
const probe = (a: string) => sh`printf '%s' ${address(a)} > ${DRIVERS_PROBE}`;

function renderState(s: PciState): string {
  return JSON.stringify({ address: s.address, devices: s.devices });
}

const removeStateDirs = sh`rmdir ${PCI_STATE_DIR} ${STATE_DIR} /run/kvmnet 2>/dev/null || true`;

function renderAction(a: PciAction): Step[] {
  switch (a.op) {
    case "loadVfio":
      return [
        {
          description: "load the vfio-pci module (modprobe vfio-pci; the kernel needs CONFIG_VFIO_PCI)",
          run: sh`[ -d ${driverDir(VFIO_PCI)} ] || modprobe ${VFIO_PCI}`,
        },
      ];
    case "writeState": {
      const path = stateFilePath(address(a.state.address));
      return [
        {
          description: `record the original drivers of ${a.state.devices.map((d) => d.address).join(", ")}`,
          run: sh`mkdir -p ${PCI_STATE_DIR} && ${writeFile(path, renderState(a.state))}`,
          undo: a.previous ? writeFile(path, renderState(a.previous)) : sh`rm -f ${path}; ${removeStateDirs}`,
        },
      ];
    }
    case "removeState":
      return [{ description: `remove the state of ${a.address}`, run: sh`rm -f ${stateFilePath(address(a.address))} && { ${removeStateDirs}; }` }];
    case "bind": {
      const steps: Step[] = [
        { description: `set driver_override of ${a.address} to vfio-pci`, run: writeOverride(a.address, VFIO_PCI), undo: writeOverride(a.address, a.override) },
      ];
      if (a.from !== null) {
        steps.push({
          description: `unbind ${a.address} from ${a.from}`,
          run: sh`printf '%s' ${a.address} > ${devFile(a.address, "driver/unbind")}`,
          // driver_override must be restored first: while it says vfio-pci, no other driver may bind.
          undo: sh`${writeOverride(a.address, a.override)}; printf '%s' ${a.address} > ${`${driverDir(a.from)}/bind`}`,
        });
      }
      steps.push({
        description: `bind ${a.address} to vfio-pci (drivers_probe)`,
        run: sh`${probe(a.address)}; ${driverIs(a.address, VFIO_PCI)}`,
        undo: unbindIfBound(a.address),
      });
      return steps;
    }
    case "giveBack": {
      const steps: Step[] = [
        { description: `restore driver_override of ${a.address}`, run: writeOverride(a.address, a.override), undo: writeOverride(a.address, VFIO_PCI) },
        {
          description: `unbind ${a.address} from vfio-pci`,
          run: sh`printf '%s' ${a.address} > ${`${driverDir(VFIO_PCI)}/unbind`}`,
          undo: sh`${writeOverride(a.address, VFIO_PCI)}; ${probe(a.address)}`,
        },
      ];
      if (a.to !== null) {
        const dir = driverDir(a.to);
        steps.push({
          description: `give ${a.address} back to ${a.to}`,
          // Bind to the recorded driver by name (drivers_probe might pick another
          // driver that claims the same id); load its module first if it is gone.
          run: sh`{ [ -d ${dir} ] || modprobe ${a.to} 2>/dev/null || true; }; if [ -d ${dir} ]; then printf '%s' ${a.address} > ${`${dir}/bind`}; else ${probe(a.address)}; fi; ${driverIs(a.address, a.to)}`,
          undo: unbindIfBound(a.address),
        });
      }
      return steps;
    }
    case "restoreOverride":
      return [{ description: `restore driver_override of ${a.address}`, run: writeOverride(a.address, a.override), undo: writeOverride(a.address, VFIO_PCI) }];
  }
}

function renderGuard(g: PciGuard): Guard {
  return {
    test: driverIs(g.address, g.driver),
    kind: "Conflict",
    message: `the driver of ${g.address} changed while this change was planned (expected ${g.driver || "none"}); run the operation again`,
  };
}

export function renderPciPlan(plan: PciPlan): Plan {
  return { guards: plan.guards.map(renderGuard), steps: plan.actions.flatMap(renderAction) };
}

/**
 * The boot-time bind (persistence): the live bind's steps as one script that
 * kvmnet-vfio-<address>.service runs before sysinit.target. It writes the
 * state file first (so a refresh after the reboot finds the resource and its
 * original drivers, as after the live bind), loads vfio-pci, then per device:
 * driver_override := vfio-pci, unbind from any other driver (one that bound
 * it before our udev rule could act, e.g. from the initramfs), drivers_probe.
 * Idempotent; a device missing or not on vfio-pci afterwards fails the unit
 * (systemctl --failed shows it) after the others are bound.
 */
export function renderBootBind(state: PciState): Script {
  const lines: Script[] = [
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    sh`mkdir -p ${PCI_STATE_DIR} && ${writeFile(stateFilePath(address(state.address)), renderState(state))}`,
    sh`[ -d ${driverDir(VFIO_PCI)} ] || modprobe ${VFIO_PCI}`,
    literal("kvmnet_rc=0"),
  ];
  for (const d of [...state.devices].sort((a, b) => a.address.localeCompare(b.address))) {
    const a = address(d.address);
    lines.push(
      joinLines([
        sh`if [ -e ${devFile(a, "config")} ]; then`,
        sh`  ${writeOverride(a, VFIO_PCI)}`,
        sh`  if ! { ${driverIs(a, VFIO_PCI)}; }; then ${unbindIfBound(a)}; ${probe(a)}; fi`,
        sh`  ${driverIs(a, VFIO_PCI)} || { echo ${`kvmnet: ${a} is not on ${VFIO_PCI}`} >&2; kvmnet_rc=1; }`,
        sh`else echo ${`kvmnet: PCI device ${a} is not on this host`} >&2; kvmnet_rc=1; fi`,
      ]),
    );
  }
  lines.push(literal('exit "$kvmnet_rc"'));
  return joinLines(lines);
}

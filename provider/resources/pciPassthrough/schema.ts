/**
 * PciPassthrough inputs: the zod schemas (check, and stored state) and the PCI
 * address form every other part of the kind relies on.
 *
 * The user gives no `name`: the device's canonical address IS the name (ids are
 * `<host>/pcipassthrough/0000:65:00.0`), so two resources for one device collide.
 */
import { z } from "zod";
import type { ConnectionInput } from "../../host";
import { resourceConnection } from "../../host/connection";
import { KINDS } from "../../identity";
import { DEFAULT_PERSISTENCE, Persistence, persistence } from "../../persist";

/** `0000:65:00.0`: 4-hex-digit domain, bus, device (≤ 0x1f), function (0–7), lower-case. */
export const CANONICAL_PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$/;

/**
 * `0000:65:00.0` or the short `65:00.0` (lspci's form), any case → the
 * canonical form sysfs uses (`/sys/bus/pci/devices/0000:65:00.0`). Undefined
 * when `s` is not a PCI address.
 */
export function normalisePciAddress(s: string): string | undefined {
  const m = /^(?:([0-9A-Fa-f]{4}):)?([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$/.exec(s);
  if (!m) return undefined;
  if (parseInt(m[3], 16) > 0x1f) return undefined;
  return `${(m[1] ?? "0000").toLowerCase()}:${m[2].toLowerCase()}:${m[3].toLowerCase()}.${m[4]}`;
}

export const pciAddress = z.string().transform((s, ctx) => {
  const a = normalisePciAddress(s);
  if (!a) {
    ctx.addIssue({
      code: "custom",
      message: "must be a PCI address: domain:bus:device.function (0000:65:00.0) or bus:device.function (65:00.0), hex, device ≤ 1f, function 0–7",
    });
    return z.NEVER;
  }
  return a;
});

/** The lifecycle kind of PciPassthrough (IDs, manifests under /etc/kvmnet/owned/). */
export const PCI_KIND = KINDS.pciPassthrough.idKind;

/** The only driver this release binds devices to. */
export const VFIO_PCI = "vfio-pci";

const driver = z.enum([VFIO_PCI], {
  error: () => ({ message: 'must be "vfio-pci" (the only passthrough driver supported)' }),
});

/**
 * A kernel driver name as the host reports it (readlink of …/driver). Only in
 * stored state: a refresh records the driver that actually holds the device
 * (e.g. "e1000" after someone took it back; "" when none does), so the next
 * preview shows `driver: "e1000" => "vfio-pci"` and up re-binds it.
 */
export const hostDriverName = z
  .string()
  .max(64)
  .regex(/^[A-Za-z0-9_.+-]*$/, "must be a kernel driver name")
  .refine((s) => s !== "." && s !== "..", "must be a kernel driver name");

function inputsObject<D extends z.ZodType<string, string | undefined>>(driverField: D) {
  return z
    .object({
      connection: resourceConnection,
      address: pciAddress
        .describe("As `lspci -D` prints it (`0000:65:00.0`); `65:00.0` means domain 0000; any case. Stored lower-case with the domain. 4-digit domains only.")
        .meta({ onChange: "replace (the old device is given back first)" }),
      driver: driverField.describe("The driver to bind the device to: only `vfio-pci`."),
      includeIommuGroup: z
        .boolean()
        .default(false)
        .describe(
          "Also bind every other endpoint of the device's IOMMU group (a GPU's audio function, devices behind one PCIe-to-PCI bridge; PCI bridges are " +
            "never bound). Without it, a group with another device on a host driver is refused.",
        ),
      force: z.boolean().default(false).describe("Pass the device through even though it carries the SSH management route, the default route, or a mounted disk or swap."),
      persistence: persistence
        .default(DEFAULT_PERSISTENCE)
        .describe(
          '`"runtime"`: the binding lasts until reboot. Any other value (systemd hosts): `/etc/udev/rules.d/40-kvmnet-vfio-<addr>.rules` sets ' +
            "`driver_override` on the device's add event, and `kvmnet-vfio-<addr>.service` (before sysinit.target, so before libvirtd) moves it to " +
            "vfio-pci even when a driver from the initramfs bound it first. Delete removes both and gives the devices back at once.",
        ),
    })
    .strict();
}

export interface PciPassthroughInputs {
  connection: ConnectionInput;
  /** Canonical address (`0000:bb:dd.f`). */
  address: string;
  /** "vfio-pci" as asked; in stored state, the driver the host had at the last refresh. */
  driver: string;
  includeIommuGroup: boolean;
  force: boolean;
  /**
   * "runtime": the binding lasts until the host reboots. Any other backend
   * (the network stack does not matter to a PCI device): bound again at every
   * boot by a udev rule and a unit of ours (persist.ts); needs systemd.
   */
  persistence: Persistence;
  /** Derived, never given by the user: the canonical address. */
  name: string;
}

const withName = (v: Omit<PciPassthroughInputs, "name">): PciPassthroughInputs => ({ ...v, name: v.address });

/** What check accepts from a program: driver must be "vfio-pci". */
export const pciPassthroughInputsSchema = inputsObject(driver.default(VFIO_PCI)).transform(withName);

/** What stored state may hold: the same, but `driver` is whatever the host had at refresh. */
export const pciPassthroughStoredSchema = inputsObject(hostDriverName.default(VFIO_PCI)).transform(withName);

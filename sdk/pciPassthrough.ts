import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, Persistence, PersistenceBackend } from "./types";

/** Arguments of a {@link PciPassthrough}. */
export interface PciPassthroughArgs {
  /** The host to manage, and how to reach it: see Connection. On change: replace if the host changes (`host`, or `local`), else update. */
  connection: pulumi.Input<Connection>;
  /**
   * As `lspci -D` prints it (`0000:65:00.0`); `65:00.0` means domain 0000; any case. Stored
   * lower-case with the domain. 4-digit domains only. On change: replace (the old device is given
   * back first).
   */
  address: pulumi.Input<string>;
  /** The driver to bind the device to: only `vfio-pci`. Default: `"vfio-pci"`. */
  driver?: pulumi.Input<"vfio-pci">;
  /**
   * Also bind every other endpoint of the device's IOMMU group (a GPU's audio function, devices
   * behind one PCIe-to-PCI bridge; PCI bridges are never bound). Without it, a group with another
   * device on a host driver is refused. Default: `false`.
   */
  includeIommuGroup?: pulumi.Input<boolean>;
  /** Pass the device through even though it carries the SSH management route, the default route, or a mounted disk or swap. Default: `false`. */
  force?: pulumi.Input<boolean>;
  /**
   * `"runtime"`: the binding lasts until reboot. Any other value (systemd hosts):
   * `/etc/udev/rules.d/40-kvmnet-vfio-<addr>.rules` sets `driver_override` on the device's add
   * event, and `kvmnet-vfio-<addr>.service` (before sysinit.target, so before libvirtd) moves it to
   * vfio-pci even when a driver from the initramfs bound it first. Delete removes both and gives
   * the devices back at once. Default: `"runtime"`.
   */
  persistence?: pulumi.Input<Persistence>;
}

/**
 * A PCI device handed to vfio-pci on a remote host, ready to be given to a guest
 * (`driver_override` + unbind + `drivers_probe`; delete gives it back to the
 * driver it had). With `persistence` other than "runtime" it is bound again at
 * every boot.
 *
 * Type token `pulumi-nodejs:dynamic/kvmnet:PciPassthrough`; id
 * `<host>/pcipassthrough/<address>`. Changing `address` or `connection.host`
 * replaces it (the old device is given back first); everything else updates in place.
 *
 * `pulumi import` cannot bring it into a stack (the engine's Read for an import
 * carries no state, so the dynamic provider and the connection are missing):
 * declare it instead; a device already on vfio-pci is adopted as it is. A create
 * interrupted after the host applied it is finished by the next `up`.
 */
export class PciPassthrough extends KvmnetResource {
  /** The host connection (secret in state). */
  declare public readonly connection: pulumi.Output<Connection>;
  /** Canonical address ("0000:65:00.0"). */
  declare public readonly address: pulumi.Output<string>;
  /**
   * "vfio-pci" while every device this resource binds is on it; otherwise the driver
   * that took one back (refresh shows that as drift, and the next up binds it again).
   */
  declare public readonly driver: pulumi.Output<string>;
  declare public readonly includeIommuGroup: pulumi.Output<boolean>;
  declare public readonly force: pulumi.Output<boolean>;
  declare public readonly persistence: pulumi.Output<Persistence>;
  /** The backend the boot-time binding went to ("runtime": none). */
  declare public readonly persistedBy: pulumi.Output<PersistenceBackend>;
  /** Differences between the boot-time rule, unit and script on the host and what the inputs render, found by the last read (empty: in sync). */
  declare public readonly persistenceDrift: pulumi.Output<string[]>;
  /** IOMMU group number. */
  declare public readonly iommuGroup: pulumi.Output<number>;
  /** PCI vendor id, 4 lower-case hex digits ("10de"). */
  declare public readonly vendorId: pulumi.Output<string>;
  /** PCI device id, 4 lower-case hex digits. */
  declare public readonly deviceId: pulumi.Output<string>;
  /** The driver the device had before (null: none); delete gives it back to this one. */
  declare public readonly originalDriver: pulumi.Output<string | null>;
  /** The driver bound now (null: none). */
  declare public readonly currentDriver: pulumi.Output<string | null>;
  /** The group's VFIO character device ("/dev/vfio/7"); null while the group is not on vfio-pci. */
  declare public readonly vfioDevice: pulumi.Output<string | null>;
  /** Every device in the IOMMU group (bridges included). */
  declare public readonly groupDevices: pulumi.Output<string[]>;
  /** The devices this resource binds to vfio-pci: the device, then (includeIommuGroup) the rest of its group. */
  declare public readonly boundDevices: pulumi.Output<string[]>;
  /** libvirt `<hostdev mode='subsystem' type='pci' managed='no'>` elements, one per bound device. */
  declare public readonly libvirtHostdevXml: pulumi.Output<string>;
  /** QEMU arguments, e.g. ["-device", "vfio-pci,host=0000:65:00.0"], one pair per bound device. */
  declare public readonly qemuDeviceArgs: pulumi.Output<string[]>;

  constructor(name: string, args: PciPassthroughArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      "pciPassthrough",
      name,
      args,
      [
        "iommuGroup",
        "vendorId",
        "deviceId",
        "originalDriver",
        "currentDriver",
        "vfioDevice",
        "groupDevices",
        "boundDevices",
        "libvirtHostdevXml",
        "qemuDeviceArgs",
        "persistedBy",
        "persistenceDrift",
      ],
      opts,
    );
  }
}

// One PCI device (a GPU, a NIC) handed to vfio-pci on one host, with what a VM needs to use it.
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...          # ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
//   pulumi config set address 0000:65:00.0        # lspci -D on the host; "65:00.0" works too
//   pulumi config set includeIommuGroup true      # optional: also bind the rest of its IOMMU group (e.g. the GPU's audio function)
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

const cfg = new pulumi.Config();
const connection: kvmnet.types.Connection = {
  host: cfg.require("host"),
  port: cfg.getNumber("port") ?? 22,
  user: cfg.get("user") ?? "root",
  privateKey: cfg.requireSecret("sshKey"),
  hostKey: cfg.require("hostKey"),
};

const gpu = new kvmnet.PciPassthrough("gpu", {
  connection,
  address: cfg.require("address"),
  includeIommuGroup: cfg.getBoolean("includeIommuGroup") ?? false,
  force: cfg.getBoolean("force") ?? false,
});

export const address = gpu.address;
export const iommuGroup = gpu.iommuGroup;
export const vfioDevice = gpu.vfioDevice;
export const originalDriver = gpu.originalDriver;
/** Paste into a libvirt domain's <devices>. */
export const libvirtHostdevXml = gpu.libvirtHostdevXml;
/** Append to a qemu-system-x86_64 command line. */
export const qemuDeviceArgs = gpu.qemuDeviceArgs;

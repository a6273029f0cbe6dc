// A bridge for guests and a tap on it that QEMU, run as an unprivileged user, opens.
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...          # ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
//   pulumi config set owner qemu                  # the user QEMU runs as (a name or a uid)
// Then, on the host, as that user:
//   qemu-system-x86_64 … $(pulumi stack output qemuNetdevArgs --json | jq -r '.[]')
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

const cfg = new pulumi.Config();
const connection: kvmnet.types.Connection = {
  host: cfg.require("host"),
  port: cfg.getNumber("port"),
  user: cfg.get("user") ?? "root",
  privateKey: cfg.requireSecret("sshKey"),
  hostKey: cfg.require("hostKey"),
};

const bridge = new kvmnet.Bridge("guests", { connection, name: cfg.get("bridgeName") ?? "br-guests", stp: false });

// No dependsOn: passing the bridge's name output orders the tap after it.
const tap = new kvmnet.TapInterface("vm1", {
  connection,
  name: cfg.get("tapName") ?? "tap-vm1",
  owner: cfg.require("owner"),
  vnetHdr: cfg.getBoolean("vnetHdr") ?? true,
  multiQueue: cfg.getBoolean("multiQueue") ?? false,
  model: cfg.get<kvmnet.TapModel>("model") ?? "virtio-net-pci",
  bridge: bridge.name,
});

export const tapName = tap.name;
export const guestMac = tap.guestMac;
export const qemuNetdevArgs = tap.qemuNetdevArgs;

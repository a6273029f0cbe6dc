// One bridge on one host.
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...          # ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

const cfg = new pulumi.Config();
const connection: kvmnet.types.Connection = {
  host: cfg.require("host"),
  user: cfg.get("user") ?? "root",
  privateKey: cfg.requireSecret("sshKey"),
  hostKey: cfg.require("hostKey"),
};

const bridge = new kvmnet.Bridge("bridge", {
  connection,
  name: cfg.get("bridgeName") ?? "br-example",
  mtu: cfg.getNumber("mtu") ?? 1500,
  stp: false,
  addresses: [cfg.get("address") ?? "192.168.60.1/24"],
});

export const bridgeName = bridge.name;
export const macAddress = bridge.macAddress;
export const ifindex = bridge.ifindex;

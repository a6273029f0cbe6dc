// The README's quickstart, run by `npm run demo` against a sandbox host.
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

const cfg = new pulumi.Config();
const connection: kvmnet.types.Connection = {
  host: cfg.require("host"),
  user: "root",
  privateKey: cfg.requireSecret("sshKey"),
  hostKey: cfg.require("hostKey"),
};

// A bridge for guests with the host's address on it.
const lab = new kvmnet.Bridge("lab", {
  connection,
  name: "br-lab",
  addresses: ["192.168.50.1/24"],
  stp: false,
  mtu: 1500,
});

export const bridge = lab.name;
export const bridgeMac = lab.macAddress;

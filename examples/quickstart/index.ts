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

// libvirt's default network, without libvirt: bridge, DHCP/DNS, masquerade.
const lab = new kvmnet.NatNetwork("lab", {
  connection,
  name: "lab",
  mode: cfg.get<kvmnet.NatNetworkMode>("mode") ?? "nat",
  subnet: "192.168.122.0/24",
  dhcp: {
    start: "192.168.122.100",
    end: "192.168.122.200",
    hosts: [{ mac: "52:54:00:00:00:10", ip: "192.168.122.10", hostname: "web" }],
  },
  dns: { domain: "lab", hosts: [{ ip: "192.168.122.10", hostnames: ["www"] }] },
});

// HTTPS on the host's port 8443 goes to the "web" guest. No dependsOn: a
// forward and its network may be created in any order, or at once.
const https = new kvmnet.PortForward("web-https", {
  connection,
  protocol: "tcp",
  hostPort: cfg.getNumber("httpsPort") ?? 8443,
  destination: "192.168.122.10",
  destinationPort: 443,
  description: "web guest https",
});

export const bridge = lab.bridgeName;
export const gateway = lab.gateway;
export const forwardTable = https.table;
export const warnings = pulumi.all([lab.warnings, https.warnings]).apply(([a, b]) => [...(a ?? []), ...(b ?? [])]);

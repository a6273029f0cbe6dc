// A fleet in one deployment: on every host a NAT network for guests (with a
// pinned address for the first guest), an SSH port forward to that guest, and
// a storage bridge. Run it with `pulumi up --continue-on-error`: then a host
// that cannot be reached fails its own resources only, the others converge,
// and the next `pulumi up` finishes the job. (Without the flag Pulumi starts
// no new operation after the first error, and it runs only 4 x CPUs of them
// at once, so resources of reachable hosts still queued then are left out.)
//   pulumi config set --path 'hosts[0].host' kvm1.example.net
//   pulumi config set --path 'hosts[0].hostKey' SHA256:...
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

interface HostEntry {
  host: string;
  hostKey: string;
  user?: string;
}

const cfg = new pulumi.Config();
const hosts = cfg.requireObject<HostEntry[]>("hosts");
const sshKey = cfg.requireSecret("sshKey");
const readyTimeoutMs = cfg.getNumber("readyTimeoutMs");

export const networks = hosts.map((h, i) => {
  const connection: kvmnet.types.Connection = {
    host: h.host,
    user: h.user ?? "root",
    hostKey: h.hostKey,
    privateKey: sshKey,
    ...(readyTimeoutMs ? { readyTimeoutMs } : {}),
  };
  const net = new kvmnet.NatNetwork(`guests-${i}`, {
    connection,
    name: "guests",
    bridgeName: "virbr0",
    mode: "nat",
    subnet: "192.168.122.0/24",
    dhcp: { start: "192.168.122.100", end: "192.168.122.200", hosts: [{ mac: "52:54:00:5c:00:10", ip: "192.168.122.10", hostname: "vm1" }] },
  });
  new kvmnet.PortForward(`vm1-ssh-${i}`, { connection, protocol: "tcp", hostPort: 2222, destination: "192.168.122.10", destinationPort: 22 });
  new kvmnet.Bridge(`storage-${i}`, { connection, name: "br-storage", mtu: 9000 });
  return { host: h.host, gateway: net.gateway };
});

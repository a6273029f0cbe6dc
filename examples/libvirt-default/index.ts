// libvirt's "default" network, natively: virbr0 with 192.168.122.1, dnsmasq
// handing out addresses (one of them pinned to a guest's MAC), masquerade out
// of the host's uplink — and two services of that guest published on the
// host's uplink address. Written as users write it: the forwards only share an
// address with the network (no dependsOn); the provider makes any order work.
//
// It replaces libvirt's own: registered in libvirt as "default" (adopting the
// definition libvirt ships, which comes back at destroy), so virt-install
// --network network=default and existing domains attach as before. Stop
// libvirt's first (README, "Replacing libvirt's default network"):
//   virsh net-destroy default && virsh net-autostart --disable default
//
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
//   pulumi config set db true        # a second guest with a pinned address and a forward to it
//   pulumi config set libvirt false  # a host without libvirt: the same network, unregistered
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

const cfg = new pulumi.Config();
const connection: kvmnet.types.Connection = {
  host: cfg.require("host"),
  port: cfg.getNumber("port") ?? 22,
  user: "root",
  privateKey: cfg.requireSecret("sshKey"),
  hostKey: cfg.require("hostKey"),
};
const withDb = cfg.getBoolean("db") ?? false;
const inLibvirt = cfg.getBoolean("libvirt") ?? true;

const hosts = [{ mac: "52:54:00:7a:00:10", ip: "192.168.122.10", hostname: "web" }];
if (withDb) hosts.push({ mac: "52:54:00:7a:00:20", ip: "192.168.122.20", hostname: "db" });

const net = new kvmnet.NatNetwork("default", {
  connection,
  name: "default",
  bridgeName: "virbr0",
  mode: "nat",
  subnet: "192.168.122.0/24",
  dhcp: { start: "192.168.122.2", end: "192.168.122.254", hosts },
  libvirt: inLibvirt ? { network: "default", adopt: true } : undefined,
});

// The web guest's HTTPS on the host's port 8443, and its DNS-like UDP service on 5353.
const https = new kvmnet.PortForward("web-https", {
  connection,
  protocol: "tcp",
  hostPort: 8443,
  destination: "192.168.122.10",
  destinationPort: 443,
});
const udp = new kvmnet.PortForward("web-udp", {
  connection,
  protocol: "udp",
  hostPort: 5353,
  destination: "192.168.122.10",
  destinationPort: 53,
});
const forwards = [https, udp];
if (withDb) {
  forwards.push(
    new kvmnet.PortForward("db-pg", {
      connection,
      protocol: "tcp",
      hostPort: 15432,
      destination: "192.168.122.20",
      destinationPort: 5432,
    }),
  );
}

export const bridge = net.bridgeName;
export const gateway = net.gateway;
// What a domain's XML (virsh define, virt-install --network) attaches with.
export const interfaceXml = net.libvirtInterfaceXml;
export const tables = pulumi.all(forwards.map((f) => f.table));

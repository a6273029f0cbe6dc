// The same two bridges on every host of a fleet. All resources of one host
// share one SSH connection. Run `pulumi up --continue-on-error`, so that a
// host that cannot be reached does not keep the others from converging.
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

export const bridges = hosts.map((h, i) => {
  const connection: kvmnet.types.Connection = { host: h.host, user: h.user ?? "root", hostKey: h.hostKey, privateKey: sshKey };
  const guests = new kvmnet.Bridge(`guests-${i}`, { connection, name: "br-guests", stp: false, addresses: [`192.168.70.1/24`] });
  const storage = new kvmnet.Bridge(`storage-${i}`, { connection, name: "br-storage", mtu: cfg.getNumber("storageMtu") ?? 9000 });
  return { host: h.host, guests: guests.ifindex, storage: storage.ifindex };
});

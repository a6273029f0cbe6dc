// Bridged networking: the uplink NIC joins br0 and the host's address, routes
// (default route included) and MAC move onto br0, so guests attached to br0
// sit on the same LAN as the host. The seeds do this with
//   nmcli con add type bridge ifname br0 … ; nmcli con add type bridge-slave ifname eno1 master br0
// which, typed over SSH, is the classic way to lock yourself out: the session
// dies between the two steps. Here the change runs under commit-confirm: the
// host arms a revert first, moves the uplink, and keeps the change only when
// the provider reaches it over a NEW SSH connection within confirmTimeoutSec.
// Otherwise the host puts everything back by itself and `pulumi up` reports it.
// `pulumi destroy` moves the addresses back onto the NIC the same way.
//
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...          # ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
//   pulumi config set uplink eno1                 # the NIC with the host's address and default route
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

const br0 = new kvmnet.Bridge("br0", {
  connection,
  name: cfg.get("bridgeName") ?? "br0",
  ports: [cfg.require("uplink")],
  // The uplink may carry addresses, routes and this very SSH session.
  takeOverUplink: true,
  // How long the host waits for the confirming connection before it reverts.
  confirmTimeoutSec: cfg.getNumber("confirmTimeoutSec") ?? 60,
  stp: false,
  // Live only: the bridge (and the move) is gone after a reboot, and the uplink
  // comes back as its own configuration says. Persisting a taken-over uplink
  // through the host's network stack is not implemented yet (refused).
  persistence: "runtime",
});

export const bridgeName = br0.name;
export const macAddress = br0.macAddress;
/** Uplink → the addresses that moved onto the bridge. */
export const takenOver = br0.takenOver;

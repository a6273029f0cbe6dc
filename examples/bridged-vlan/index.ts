// Bridged host with a guest VLAN: the uplink NIC joins br0 (its address,
// routes and MAC move onto br0 under commit-confirm, so a cut SSH session
// cannot lock you out), and VLAN 10 of the same wire is bridged for guests:
// a guest's tap on br-vlan10 is on VLAN 10 of the switch port the uplink plugs
// into. The VLAN's parent is br0's name output, so the engine orders them.
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
const vlanId = cfg.getNumber("vlanId") ?? 10;

const br0 = new kvmnet.Bridge("br0", {
  connection,
  name: "br0",
  ports: [cfg.require("uplink")],
  takeOverUplink: true,
  stp: false,
  confirmTimeoutSec: cfg.getNumber("confirmTimeoutSec") ?? 60,
});
const guests = new kvmnet.Bridge(`br-vlan${vlanId}`, { connection, name: `br-vlan${vlanId}`, stp: false });
const vlan = new kvmnet.VlanSubinterface(`vlan${vlanId}`, { connection, parent: br0.name, vlanId, bridge: guests.name });

export const takenOver = br0.takenOver;
export const vlanName = vlan.name;
export const guestBridge = guests.name;

// A trunk NIC carrying VLANs 10 and 20, each bridged for guests: a guest's tap
// on br-vlan10 is on VLAN 10 of the switch port the trunk NIC plugs into.
//   pulumi config set host kvm1.example.net
//   pulumi config set hostKey SHA256:...          # ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
//   pulumi config set --secret sshKey < ~/.ssh/id_ed25519
//   pulumi config set trunk eno2                  # the NIC on the switch's trunk port
// Optional: port (SSH), protocol ("802.1ad" for QinQ service tags), mtu (of the VLANs), adopt.
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
const trunk = cfg.require("trunk");

export const vlans: Record<string, pulumi.Output<string>> = {};
for (const vlanId of [10, 20]) {
  const bridge = new kvmnet.Bridge(`br-vlan${vlanId}`, { connection, name: `br-vlan${vlanId}`, stp: false });
  // `bridge: bridge.name` makes the VLAN wait for its bridge (and go before it on destroy).
  const vlan = new kvmnet.VlanSubinterface(`vlan${vlanId}`, {
    connection,
    parent: trunk,
    vlanId,
    protocol: cfg.get<kvmnet.VlanProtocol>("protocol") ?? "802.1Q",
    mtu: cfg.getNumber("mtu"),
    bridge: bridge.name,
    adopt: cfg.getBoolean("adopt") ?? false,
  });
  vlans[vlanId] = vlan.name;
}

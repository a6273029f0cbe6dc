import * as pulumi from "@pulumi/pulumi";
import { SECRET_FIELDS } from "../provider/validate";

/**
 * How to reach a KVM host. Every resource takes one as `connection`.
 *
 * Host keys are verified by default: pin `hostKey`, or have the host in
 * `knownHostsFile` (~/.ssh/known_hosts). A `host` that is an alias in
 * ~/.ssh/config gets HostName, User, Port, IdentityFile and ProxyJump from it;
 * fields given here win over the file.
 */
export interface Connection {
  /**
   * Host name, IP address, or an alias from `~/.ssh/config` (its HostName, User, Port, IdentityFile
   * and ProxyJump apply; fields given here win). Also the first part of every resource id (`local`
   * instead, with `local: true`).
   */
  host: pulumi.Input<string>;
  /** SSH port. Default: ssh config, else 22. */
  port?: pulumi.Input<number>;
  /** Login user. Non-root users need `sudo`. Default: ssh config, else `root`. */
  user?: pulumi.Input<string>;
  /** Private key text (OpenSSH or PEM). Secret in state. */
  privateKey?: pulumi.Input<string>;
  /** Passphrase of an encrypted private key. Secret in state. */
  privateKeyPassphrase?: pulumi.Input<string>;
  /** Password authentication. Secret in state. */
  password?: pulumi.Input<string>;
  /** ssh-agent socket path. Default: `SSH_AUTH_SOCK` when no key or password is given. */
  agent?: pulumi.Input<string>;
  /** Pinned host key: an OpenSSH fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints) or a public key line (`ssh-ed25519 AAAA…`). */
  hostKey?: pulumi.Input<string>;
  /**
   * The known_hosts file used when no `hostKey` is pinned (hashed entries, `[host]:port`, wildcards
   * and `@revoked` understood). Must be a regular file (up to 16 MiB); a FIFO or device is refused,
   * like an IdentityFile or ssh config that is not one. Default: `~/.ssh/known_hosts`.
   */
  knownHostsFile?: pulumi.Input<string>;
  /** Skip host-key verification. Explicit opt-out; not recommended; not with `hostKey`. Default: `false`. */
  insecureIgnoreHostKey?: pulumi.Input<boolean>;
  /**
   * `true` runs commands with `sudo -n`; `{ password }` feeds sudo the password (secret in state;
   * no control characters, since sudo reads it up to the first newline).
   */
  sudo?: pulumi.Input<boolean | { password: pulumi.Input<string> }>;
  /** A nested `Connection` to a bastion (like `ssh -J`); needs `AllowTcpForwarding` there. */
  jumpHost?: pulumi.Input<Connection>;
  /**
   * How long to wait for each network step, in ms (1000–600000): connect and SSH handshake, a jump
   * host's forward to this host, each channel open. Default: 20000.
   */
  readyTimeoutMs?: pulumi.Input<number>;
  /**
   * Run on the machine running pulumi (no SSH), e.g. a program on the KVM host itself; `host` is
   * then only a label. Not with `jumpHost`. Default: `false`.
   */
  local?: pulumi.Input<boolean>;
}

/**
 * What makes an object come back after the host reboots. Live changes happen at
 * once whatever the choice; this picks where the boot-time configuration goes:
 * - "auto": the stack the host runs (NetworkManager, else systemd-networkd, else ifupdown, else runtime);
 * - "networkmanager" | "networkd" | "ifupdown": that stack, refused when the host does not run it;
 * - "runtime": nothing is written; the object is gone after a reboot (refresh then reports it gone).
 * Every file written is listed in /etc/kvmnet/owned/<kind>/<name> and removed on delete.
 */
/** The guest NIC model the attach outputs (`libvirtInterfaceXml`, `qemuNetdevArgs`) name, as QEMU's `-device` does. */
export type NicModel = "virtio-net-pci" | "e1000" | "rtl8139";

/** A libvirt network registered for a Bridge, NatNetwork or VlanSubinterface, so VMs attach by name. */
export interface LibvirtRegistration {
  /** The libvirt network's name: what `virsh net-list` shows and a domain's `<source network='…'/>` names. */
  network: pulumi.Input<string>;
  /** Mark the network autostart, so libvirtd starts it at boot (`virsh net-autostart`). Default: `true`. */
  autostart?: pulumi.Input<boolean>;
  /**
   * Replace a libvirt network of this name that this provider did not define (libvirt's own
   * `default`, say). It must be stopped first (`virsh net-destroy`); its definition is kept on the
   * host and defined again when this resource is deleted. Without it such a name is refused.
   * Default: `false`.
   */
  adopt?: pulumi.Input<boolean>;
}

export type Persistence = "auto" | "networkmanager" | "networkd" | "ifupdown" | "runtime";

/** Which backend an object's boot-time configuration went to ("runtime": none). */
export type PersistenceBackend = Exclude<Persistence, "auto">;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !pulumi.Output.isInstance(v) && !(v instanceof Promise);
}

/**
 * Mark a connection's credentials secret in state. A plain object keeps its
 * non-secret fields (host, user, …) readable in previews and only the
 * credentials are encrypted; a connection given as one Output is made secret
 * whole, since its parts cannot be told apart.
 */
export function protectConnection(c: pulumi.Input<Connection>): pulumi.Input<Connection> {
  if (!isPlainObject(c)) return pulumi.secret(c);
  // isPlainObject ruled out a Promise and an Output: c is the Connection itself.
  const out: Record<string, unknown> = { ...(c as Connection) };
  for (const k of SECRET_FIELDS) {
    if (c[k] !== undefined) out[k] = pulumi.secret(c[k] as pulumi.Input<string>);
  }
  if (c.sudo !== undefined && typeof c.sudo !== "boolean") {
    out.sudo = isPlainObject(c.sudo) ? { ...c.sudo, password: pulumi.secret((c.sudo as { password: pulumi.Input<string> }).password) } : pulumi.secret(c.sudo);
  }
  if (c.jumpHost !== undefined) out.jumpHost = protectConnection(c.jumpHost as pulumi.Input<Connection>);
  return out as unknown as Connection;
}

/** Bridge inputs: the zod schema (check) and the kernel units they map to. */
import { z } from "zod";
import { nicModel } from "../../attach";
import { libvirtSettings } from "../../libvirt";
import { resourceConnection } from "../../host/connection";
import { DEFAULT_PERSISTENCE, persistence } from "../../persist";
import { ifname, interfaceCidr, macAddress, storedIfname } from "../../validate";

/** Seconds with the kernel's resolution (centiseconds, USER_HZ 100). */
const seconds = (min: number, max: number) =>
  z
    .number()
    .min(min, `must be at least ${min} seconds`)
    .max(max, `must be at most ${max} seconds`)
    .refine((v) => Math.abs(Math.round(v * 100) - v * 100) < 1e-6, "must be a multiple of 0.01 seconds (the kernel counts in centiseconds)");

export { persistence };

/**
 * A port's persisted files are named `<the bridge's stem>-port-<port>`
 * (05-kvmnet-bridge-x-port-y.network, kvmnet-bridge-x-port-y.nmconnection,
 * whose id also seeds the profile's UUID), so a bridge named "x-port-y" would
 * own the same paths and profile as bridge "x"'s port "y".
 */
const bridgeName = ifname.refine((s) => !s.includes("-port-"), 'must not contain "-port-" (its persisted files would be those of another bridge\'s port)');

/** The rules for the bridge's name and its ports' names. */
interface NameRules {
  name: z.ZodType<string, string>;
  port: z.ZodType<string, string>;
}

function bridgeSchema(names: NameRules) {
  return z
    .object({
      connection: resourceConnection,
      name: names.name
        .describe(
          "Interface name: 1–15 characters of `[A-Za-z0-9_.-]`, not starting with `-` or `.`, not `all`, `default` or `bonding_masters`; " +
            "a Bridge name must not contain `-port-` (its persisted files would be another bridge's port files). " +
            "The same rule holds for every interface-name input (`ports`, NatNetwork `bridgeName`/`uplink`, VlanSubinterface `parent`/`name`/`bridge`).",
        )
        .meta({ onChange: "replace (deleted first when it has ports, which would collide)" }),
      stp: z.boolean().default(false).describe("Spanning Tree Protocol (kernel STP)."),
      forwardDelay: seconds(0, 30).optional().describe("STP forward delay, seconds, 0–30 (2–30 with STP on), 0.01 s steps.").meta({ docDefault: "kernel's (15 s)" }),
      helloTime: seconds(1, 10).optional().describe("STP hello time, seconds, 1–10, 0.01 s steps.").meta({ docDefault: "kernel's (2 s)" }),
      maxAge: seconds(6, 40).optional().describe("STP max message age, seconds, 6–40, 0.01 s steps.").meta({ docDefault: "kernel's (20 s)" }),
      priority: z.number().int().min(0).max(65535).optional().describe("Bridge priority, 0–65535 (lower wins the root election).").meta({ docDefault: "kernel's (32768)" }),
      ageingTime: seconds(0, 1_000_000).optional().describe("How long learned MAC addresses are kept, seconds, 0–1000000, 0.01 s steps.").meta({ docDefault: "kernel's (300 s)" }),
      mtu: z.number().int().min(68).max(65535).optional().describe("MTU of the bridge device, 68–65535.").meta({ docDefault: "kernel's" }),
      macAddress: macAddress
        .optional()
        .describe("Fixed unicast MAC address (`52:54:00:12:34:56`). Without it the kernel picks one (usually a port's).")
        .meta({ docDefault: "kernel's" }),
      vlanFiltering: z
        .boolean()
        .optional()
        .describe("802.1Q VLAN filtering (needs a kernel with `CONFIG_BRIDGE_VLAN_FILTERING`; otherwise the update fails as Unsupported and changes nothing).")
        .meta({ docDefault: "kernel's" }),
      ports: z
        .array(names.port)
        .default([])
        .describe(
          "Interfaces to enslave. Each must exist and not be in another bridge; unless `takeOverUplink`, it must also have no addresses and not carry " +
            "the SSH management route or the default route. A port that was down is brought up, and down again when released. " +
            "Interfaces not listed (guest taps) are left alone; a port removed from the list is released.",
        ),
      addresses: z
        .array(interfaceCidr)
        .default([])
        .describe(
          "CIDR addresses (IPv4 and IPv6), e.g. `192.168.50.1/24`. Unicast only; IPv6 link-local (`fe80::/10`, which the kernel makes on every link " +
            "and this provider does not manage), loopback and unspecified addresses are refused at check. Other addresses on the bridge are left alone; " +
            "one removed from the list is removed.",
        ),
      // What this resource's own interrupted create made is taken over without adopt: lifecycle's creation record.
      adopt: z
        .boolean()
        .default(false)
        .describe(
          "Manage a bridge of this name that already exists — made by hand or by another tool — (its settings become the declared ones, and delete removes it) " +
            "instead of failing with a Conflict error. Not needed for a bridge this resource's own interrupted create made " +
            "(see [Interrupted creates, adoption and `pulumi import`](#interrupted-creates-adoption-and-pulumi-import)).",
        ),
      // provider/confirm.ts: the commit-confirm such a change runs under.
      takeOverUplink: z
        .boolean()
        .default(false)
        .describe(
          "Allow ports that carry addresses or routes (the uplink NIC, even the SSH session's): their addresses and non-kernel routes move onto the bridge, " +
            "which takes the NIC's MAC; they move back when the port is released or the bridge deleted. Such changes run under commit-confirm: " +
            "the host reverts them by itself unless a new SSH connection confirms them within `confirmTimeoutSec`.",
        ),
      confirmTimeoutSec: z
        .number()
        .int()
        .min(15, "must be at least 15 seconds")
        .max(3600, "must be at most 3600 seconds")
        .default(60)
        .describe("Seconds, 15–3600: how long the host waits for a new SSH connection to confirm a change of the management path before it reverts it."),
      persistence: persistence
        .default(DEFAULT_PERSISTENCE)
        .describe(
          'Where the boot-time configuration goes: `"auto"` (the stack the host runs), `"networkd"`, `"networkmanager"` (ports must be Ethernet NICs, ' +
            'bridge times whole seconds), `"ifupdown"`, or `"runtime"` (nothing: the bridge lasts until the host reboots, and a `refresh` afterwards ' +
            "shows it gone). See [Persistence](#persistence). With `takeOverUplink`: networkd and NetworkManager (the uplink's addresses and routes " +
            "go into the bridge's configuration); ifupdown and DHCP-configured uplinks are refused.",
        ),
      libvirt: libvirtSettings
        .optional()
        .describe("Register the bridge in libvirt (a network of the host-bridge form, `<forward mode='bridge'/>`), so VMs attach by name. Needs libvirtd on the host.")
        .meta({ docDefault: "not registered" }),
      model: nicModel
        .default("virtio-net-pci")
        .describe('The guest NIC model in `libvirtInterfaceXml` and `qemuNetdevArgs`: `"virtio-net-pci"`, `"e1000"` or `"rtl8139"`. Nothing on the host depends on it.'),
    })
    .strict()
    .superRefine((b, ctx) => {
      if (b.stp && b.forwardDelay !== undefined && b.forwardDelay < 2) {
        ctx.addIssue({ code: "custom", path: ["forwardDelay"], message: "must be 2–30 seconds when stp is on (kernel limit)" });
      }
      const seenPorts = new Set<string>();
      b.ports.forEach((p, i) => {
        if (p === b.name) ctx.addIssue({ code: "custom", path: ["ports", i], message: "a bridge cannot be its own port" });
        if (p === "lo") ctx.addIssue({ code: "custom", path: ["ports", i], message: "the loopback interface cannot be a bridge port" });
        if (seenPorts.has(p)) ctx.addIssue({ code: "custom", path: ["ports", i], message: `lists ${p} twice` });
        seenPorts.add(p);
      });
      const seenAddrs = new Set<string>();
      b.addresses.forEach((a, i) => {
        if (seenAddrs.has(a)) ctx.addIssue({ code: "custom", path: ["addresses", i], message: `lists ${a} twice` });
        seenAddrs.add(a);
      });
    });
}

/** A program's inputs: check, create and update. */
export const bridgeInputsSchema = bridgeSchema({ name: bridgeName, port: ifname });

/** Stored state, which may hold names written before #14's rules (see storedIfname). */
export const bridgeStoredSchema = bridgeSchema({ name: storedIfname, port: storedIfname });

export type BridgeInputs = z.output<typeof bridgeInputsSchema>;

/** Kernel bridge attributes we manage, as `ip link … type bridge` names them, in kernel units. */
export interface BridgeOptions {
  stp_state?: number;
  forward_delay?: number;
  hello_time?: number;
  max_age?: number;
  priority?: number;
  ageing_time?: number;
  vlan_filtering?: number;
}

const cs = (s: number | undefined) => (s === undefined ? undefined : Math.round(s * 100));
const bit = (b: boolean | undefined) => (b === undefined ? undefined : b ? 1 : 0);

/** The managed options of `b` in kernel units; unset inputs are left out (unmanaged). */
export function desiredOptions(b: BridgeInputs): BridgeOptions {
  const o: BridgeOptions = {
    stp_state: bit(b.stp),
    forward_delay: cs(b.forwardDelay),
    hello_time: cs(b.helloTime),
    max_age: cs(b.maxAge),
    priority: b.priority,
    ageing_time: cs(b.ageingTime),
    vlan_filtering: bit(b.vlanFiltering),
  };
  for (const k of Object.keys(o) as (keyof BridgeOptions)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** Input field name for each kernel option (for messages and read-back). */
export const OPTION_FIELDS: Record<keyof BridgeOptions, keyof BridgeInputs> = {
  stp_state: "stp",
  forward_delay: "forwardDelay",
  hello_time: "helloTime",
  max_age: "maxAge",
  priority: "priority",
  ageing_time: "ageingTime",
  vlan_filtering: "vlanFiltering",
};

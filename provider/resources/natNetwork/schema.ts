/**
 * NatNetwork inputs: the zod schema (check), its defaults, and the IPv4 math
 * the planner and renderers share. IPv4 only in this release: the subnet is
 * what dnsmasq serves and what the nft rules match with `ip saddr/daddr`.
 */
import { createHash } from "crypto";
import * as ipaddr from "ipaddr.js";
import { z } from "zod";
import { nicModel } from "../../attach";
import { libvirtSettings } from "../../libvirt";
import { resourceConnection } from "../../host/connection";
import { ifname, macAddress, storedIfname, UNKNOWN } from "../../validate";
import { DEFAULT_PERSISTENCE, persistence } from "../../persist";

export const MODES = ["nat", "route", "isolated", "open"] as const;
export type NatMode = (typeof MODES)[number];

/** Modes that forward between the bridge and the uplink (they need net.ipv4.ip_forward=1). */
export function modeForwards(mode: NatMode): boolean {
  return mode === "nat" || mode === "route";
}

/**
 * The network's own name. It becomes part of an nft table name
 * (`kvmnet_nat_<name>`: nft identifiers allow only letters, digits and '_'),
 * of paths under /run/kvmnet and of the resource id, hence the narrow set.
 */
export const networkName = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_]*$/, "must start with a letter and contain only letters, digits and '_' (it becomes part of an nft table name)")
  .max(15, "must be at most 15 characters");

/** A dotted-quad IPv4 address. */
export const ipv4 = z.string().refine((s) => ipaddr.IPv4.isValidFourPartDecimal(s), "must be an IPv4 address (192.168.122.10)");

const DNS_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** inet_aton(3) reads these as an IPv4 address: one to four dot-separated numbers, decimal, octal or 0x-hex. */
const INET_ATON = /^(0x[0-9a-f]*|\d+)(\.(0x[0-9a-f]*|\d+)){0,3}$/i;

/**
 * Why `s` is not a host name dnsmasq reads as one, or undefined. The last
 * label must not be all digits (RFC 1123 §2.1; "10.66.0.77", "3600") nor may
 * the whole look like an address to inet_aton ("0x0a.0x01"): as an addn-hosts
 * name or domain= it would answer queries for an address-shaped name.
 */
function hostNameProblem(s: string): string | undefined {
  if (s.length > 253) return "must be at most 253 characters";
  if (!DNS_NAME.test(s)) return "must be a DNS name: dot-separated labels of letters, digits and '-' (1–63 characters, not starting or ending with '-')";
  if (/^\d+$/.test(s.slice(s.lastIndexOf(".") + 1))) return "must not end in an all-digit label (RFC 1123: it reads as an address or a number)";
  if (INET_ATON.test(s)) return "must not look like an IPv4 address (inet_aton reads it as one)";
  return undefined;
}

/**
 * A host or domain name as dnsmasq reads it from `domain=`, `local=/…/` and
 * an addn-hosts line (`<ip> <name>…`): RFC 1123 labels, at most 253
 * characters, whose last label is not all digits.
 */
export const dnsName = z.string().superRefine((s, ctx) => {
  const problem = hostNameProblem(s);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/**
 * A dhcp-host line's host name. dnsmasq(8) --dhcp-host reads each
 * comma-separated field by its shape: a MAC, `id:`/`tag:`/`set:`, an IPv4
 * address, `[ipv6]`, a lease time (digits with an optional s/m/h/d/w, or
 * "infinite"), "ignore" (deny DHCP), and only otherwise a host name (#14). So
 * on top of {@link dnsName} the keywords and lease-time shapes are refused;
 * in any case, since host names are case-insensitive and a later dnsmasq
 * comparing them so would change the line's meaning.
 */
export const dhcpHostName = z.string().superRefine((s, ctx) => {
  let problem: string | undefined;
  if (/^(ignore|infinite)$/i.test(s)) problem = `is a keyword in a dnsmasq dhcp-host line ("ignore" denies the host DHCP, "infinite" is a lease time), not a host name`;
  else if (/^\d+[smhdw]?$/i.test(s)) problem = "reads as a lease time in a dnsmasq dhcp-host line (digits with an optional s/m/h/d/w), not a host name";
  else problem = hostNameProblem(s);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/** An IPv4 network in CIDR form with the host bits zero, /8 – /30. */
export const ipv4Subnet = z.string().superRefine((s, ctx) => {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(s);
  if (!m || !ipaddr.IPv4.isValidFourPartDecimal(m[1])) {
    ctx.addIssue({ code: "custom", message: "must be an IPv4 network in CIDR form (192.168.122.0/24)" });
    return;
  }
  const prefix = Number(m[2]);
  if (prefix < 8 || prefix > 30) {
    ctx.addIssue({ code: "custom", message: "prefix must be /8 to /30 (a network needs room for a gateway and guests)" });
    return;
  }
  if (ipaddr.IPv4.networkAddressFromCIDR(s).toString() !== m[1]) {
    ctx.addIssue({ code: "custom", message: `must be the network address (host bits zero): did you mean ${ipaddr.IPv4.networkAddressFromCIDR(s).toString()}/${prefix}?` });
  }
});

/** The name rules before #14 (RFC 1123 labels only): what state written then may hold. */
const storedDnsName = z
  .string()
  .max(253, "must be at most 253 characters")
  .regex(DNS_NAME, "must be a DNS name: dot-separated labels of letters, digits and '-' (1–63 characters, not starting or ending with '-')");

/** The name rules a NatNetwork schema applies. */
interface NameRules {
  dnsName: z.ZodType<string, string>;
  dhcpHostName: z.ZodType<string, string>;
  /** Whether a dotted dhcp host name must carry dns.domain as its domain part. */
  domainPart: boolean;
  /** bridgeName and uplink. */
  ifname: z.ZodType<string, string>;
}

/** The objects a NatNetwork's `dhcp` and `dns` hold, under `rules`. */
function nestedSchemas(rules: NameRules) {
  const dhcpHost = z
    .object({
      mac: macAddress.describe("The guest NIC's MAC address (unicast, `52:54:00:12:34:56`)."),
      ip: ipv4.describe("The address it always gets: inside the subnet, not the gateway."),
      hostname: rules.dhcpHostName.optional().describe("Host name handed to the guest and resolvable through the network's DNS (what dnsmasq reads as one: see `dhcp`)."),
    })
    .strict();

  const dhcp = z
    .object({
      start: ipv4.describe("First address of the dynamic range, inside the subnet."),
      end: ipv4.describe("Last address of the dynamic range: inside the subnet, not before `start`; the range must not hold the gateway."),
      // Written as a number into dhcp-range; dnsmasq's minimum is 120.
      leaseTime: z
        .number({ error: () => ({ message: "must be a number of seconds (120–31536000)" }) })
        .int("must be a whole number of seconds")
        .min(120, "must be at least 120 seconds (dnsmasq's minimum)")
        .max(31_536_000, "must be at most 31536000 seconds (a year)")
        .default(3600)
        .describe("Lease time in whole seconds, 120–31536000."),
      hosts: z.array(dhcpHost).default([]).describe("Fixed addresses by MAC. Changing them reloads dnsmasq (SIGHUP): leases are kept."),
    })
    .strict();

  const dnsHost = z
    .object({
      ip: ipv4.describe("IPv4 address the names resolve to."),
      hostnames: z
        .array(rules.dnsName)
        .min(1, "must list at least one name")
        .describe("Names (DNS labels or dotted names), at least one; with a domain, short names also resolve as `<name>.<domain>`."),
    })
    .strict();

  const dns = z
    .object({
      enabled: z.boolean().default(true).describe("Serve DNS on the gateway (port 53)."),
      domain: rules.dnsName.optional().describe("Local domain: guests' names resolve as `<name>.<domain>`, and queries for it are answered here, never forwarded."),
      hosts: z.array(dnsHost).default([]).describe("Static entries. Changing them reloads dnsmasq (SIGHUP)."),
    })
    .strict();

  return { dhcpHost, dhcp, dnsHost, dns };
}

function natNetworkSchema(rules: NameRules) {
  const { dhcp: dhcpObject, dns: dnsSchema } = nestedSchemas(rules);

  /**
   * `false`, or the DHCP settings. Not a z.union: a union that fails on both
   * sides reports only "Invalid input" at `dhcp`, hiding which nested field
   * (dhcp.leaseTime, dhcp.hosts.0.hostname) is wrong; here the object's own
   * issues, with their paths, are the answer.
   */
  const dhcpSchema = z.unknown().transform((v, ctx): false | z.output<typeof dhcpObject> => {
    if (v === false) return false;
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      ctx.addIssue({ code: "custom", message: "must be false or an object { start, end, leaseTime, hosts }" });
      return z.NEVER;
    }
    const r = dhcpObject.safeParse(v);
    if (r.success) return r.data;
    for (const issue of r.error.issues) ctx.addIssue({ ...issue, input: undefined });
    return z.NEVER;
  });

  return z
    .object({
      connection: resourceConnection,
      name: networkName
        .describe(
          "A letter, then letters, digits or `_`; at most 15 characters. It names the nft table (`kvmnet_nat_<name>`), the files under " +
            "`/run/kvmnet/nat/<name>/` and the units.",
        )
        .meta({ onChange: "replace" }),
      bridgeName: rules.ifname.optional().describe("The bridge interface.").meta({ docDefault: "`kvn-<name>` (shortened with a hash when too long)", onChange: "replace" }),
      mode: z
        .enum(MODES, { error: () => ({ message: 'must be one of "nat", "route", "isolated", "open"' }) })
        .default("nat")
        .describe(
          "`nat` masquerades the subnet out of the uplink (not to 224.0.0.0/24 or 255.255.255.255, as libvirt); `route` forwards without masquerade; " +
            "`isolated` forwards nothing to or from the bridge (guests reach each other and the gateway); `open` adds no rules. " +
            "In every mode a `PortForward` to a guest works (see [Forwards into a network](#forwards-into-a-network)).",
        )
        .meta({ onChange: "update (one atomic nft transaction)" }),
      subnet: ipv4Subnet.describe("IPv4 network in CIDR form, host bits zero, /8–/30 (`192.168.122.0/24`). Must not overlap an address on the host.").meta({ onChange: "replace" }),
      gateway: ipv4.optional().describe("The bridge's address, inside the subnet.").meta({ docDefault: "first usable address", onChange: "replace" }),
      dhcp: dhcpSchema
        .default(false)
        .describe(
          "`false` for none, or `{ start, end, leaseTime (3600 s), hosts: [{ mac, ip, hostname }] }`. `leaseTime`: whole seconds, 120–31536000. " +
            "`hostname`: a DNS name (labels of letters, digits, `-`) that dnsmasq's dhcp-host line reads as a name: not `ignore` or `infinite` (any case), " +
            "not a lease time (digits with an optional `s`/`m`/`h`/`d`/`w`), not ending in an all-digit label, not address-shaped (`10.66.0.77`, `0x0a.0x01`); " +
            "a name with a domain part (`web.lab`) only when that part (after the first `.`) is `dns.domain` and DNS is enabled, as dnsmasq drops it otherwise.",
        )
        .meta({ onChange: "update; host entries reload dnsmasq with SIGHUP, keeping leases" }),
      dns: dnsSchema
        .default({ enabled: true, hosts: [] })
        .describe(
          "`{ enabled, domain, hosts: [{ ip, hostnames }] }`; names in `domain` are answered locally and never forwarded. `domain` and `hostnames`: " +
            "DNS names (labels of letters, digits, `-`, ≤ 253 characters) not ending in an all-digit label and not address-shaped.",
        )
        .meta({ docDefault: "`{ enabled: true }`", onChange: "update (SIGHUP for host entries)" }),
      uplink: rules.ifname.optional().describe("Interface `nat`/`route` forward through.").meta({ docDefault: "the default route's interface" }),
      mtu: z.number().int().min(68).max(65535).optional().describe("Bridge MTU, 68–65535.").meta({ docDefault: "kernel's" }),
      persistence: persistence
        .default(DEFAULT_PERSISTENCE)
        .describe(
          '`"runtime"`: until reboot. Any other value (systemd hosts; on `"auto"`, any host whose network stack is detected) persists the network ' +
            "through units of our own, whichever stack the host runs: `kvmnet-nat-<name>.service` recreates the bridge, its address, the table and " +
            "ip_forward at boot, dnsmasq's unit is enabled, a sysctl.d file (forwarding modes) and an nftables.service drop-in keep ip_forward and " +
            "the table through that service's flush. Changing it leaves the live network alone.",
        ),
      // What this resource's own interrupted create left is taken over without adopt.
      adopt: z
        .boolean()
        .default(false)
        .describe(
          "Manage what already exists under this network's names instead of failing with a Conflict: a bridge named `bridgeName` made by hand " +
            "or by another tool (it gets the gateway address and MTU; its other addresses and ports stay), the table `kvmnet_nat_<name>` and its state. " +
            "Their settings become the declared ones; delete removes them, bridge included. Not needed for what this resource's own interrupted create made.",
        ),
      libvirt: libvirtSettings
        .optional()
        .describe("Register the network's bridge in libvirt (a network of the host-bridge form, `<forward mode='bridge'/>`), so VMs attach by name. Needs libvirtd on the host.")
        .meta({ docDefault: "not registered" }),
      model: nicModel
        .default("virtio-net-pci")
        .describe('The guest NIC model in `libvirtInterfaceXml` and `qemuNetdevArgs`: `"virtio-net-pci"`, `"e1000"` or `"rtl8139"`. Nothing on the host depends on it.'),
    })
    .strict()
    .superRefine((n, ctx) => {
      if (!ipaddr.IPv4.isValidFourPartDecimal(n.subnet.split("/")[0] ?? "")) return; // reported on subnet
      const net = subnetRange(n.subnet);
      const inside = (ip: string) => ipaddr.IPv4.isValidFourPartDecimal(ip) && ipToInt(ip) > net.network && ipToInt(ip) < net.broadcast;
      const gateway = n.gateway ?? intToIp(net.network + 1);
      if (n.gateway !== undefined && !inside(n.gateway)) {
        ctx.addIssue({ code: "custom", path: ["gateway"], message: `must be a usable address inside ${n.subnet}` });
      }
      if (n.bridgeName === "lo") ctx.addIssue({ code: "custom", path: ["bridgeName"], message: "must not be the loopback interface" });
      if (n.uplink !== undefined && n.uplink === (n.bridgeName ?? defaultBridgeName(n.name))) {
        ctx.addIssue({ code: "custom", path: ["uplink"], message: "must not be the network's own bridge" });
      }
      if (n.dhcp !== false) {
        const d = n.dhcp;
        if (!inside(d.start)) ctx.addIssue({ code: "custom", path: ["dhcp", "start"], message: `must be a usable address inside ${n.subnet}` });
        if (!inside(d.end)) ctx.addIssue({ code: "custom", path: ["dhcp", "end"], message: `must be a usable address inside ${n.subnet}` });
        if (inside(d.start) && inside(d.end)) {
          if (ipToInt(d.start) > ipToInt(d.end)) ctx.addIssue({ code: "custom", path: ["dhcp", "end"], message: "must not come before dhcp.start" });
          else if (ipToInt(gateway) >= ipToInt(d.start) && ipToInt(gateway) <= ipToInt(d.end)) {
            ctx.addIssue({ code: "custom", path: ["dhcp", "start"], message: `the range ${d.start}–${d.end} includes the gateway ${gateway}` });
          }
        }
        const macs = new Set<string>();
        const ips = new Set<string>();
        const names = new Set<string>();
        d.hosts.forEach((h, i) => {
          if (!inside(h.ip)) ctx.addIssue({ code: "custom", path: ["dhcp", "hosts", i, "ip"], message: `must be a usable address inside ${n.subnet}` });
          else if (h.ip === gateway) ctx.addIssue({ code: "custom", path: ["dhcp", "hosts", i, "ip"], message: "is the gateway's address" });
          if (macs.has(h.mac)) ctx.addIssue({ code: "custom", path: ["dhcp", "hosts", i, "mac"], message: `lists ${h.mac} twice` });
          if (ips.has(h.ip)) ctx.addIssue({ code: "custom", path: ["dhcp", "hosts", i, "ip"], message: `lists ${h.ip} twice` });
          // dnsmasq(8) --domain: a DHCP host name with a domain part (after its first
          // '.') is honoured only when that part is the domain; else the name is dropped.
          const dot = h.hostname?.indexOf(".") ?? -1;
          const domain = n.dns.enabled ? n.dns.domain : undefined;
          if (rules.domainPart && h.hostname !== undefined && dot >= 0 && domain !== UNKNOWN && h.hostname.slice(dot + 1).toLowerCase() !== domain?.toLowerCase()) {
            ctx.addIssue({
              code: "custom",
              path: ["dhcp", "hosts", i, "hostname"],
              message: domain
                ? `has the domain part "${h.hostname.slice(dot + 1)}", not dns.domain "${domain}": dnsmasq drops such a name; give the bare name (${h.hostname.slice(0, dot)})`
                : `has a domain part, and the network serves no domain (dns.domain, with dns enabled): dnsmasq drops such a name; give the bare name (${h.hostname.slice(0, dot)})`,
            });
          }
          if (h.hostname !== undefined && names.has(h.hostname.toLowerCase())) {
            ctx.addIssue({ code: "custom", path: ["dhcp", "hosts", i, "hostname"], message: `lists ${h.hostname} twice` });
          }
          macs.add(h.mac);
          ips.add(h.ip);
          if (h.hostname !== undefined) names.add(h.hostname.toLowerCase());
        });
      }
    })
    .transform((n) => ({
      ...n,
      bridgeName: n.bridgeName ?? defaultBridgeName(n.name),
      gateway: n.gateway ?? intToIp(subnetRange(n.subnet).network + 1),
    }));
}

/** The name rules of a program's inputs. */
const INPUT_RULES: NameRules = { dnsName, dhcpHostName, domainPart: true, ifname };

/** A program's inputs: check, create and update. */
export const natNetworkInputsSchema = natNetworkSchema(INPUT_RULES);

/** The objects in a program's `dhcp` and `dns` (the SDK's NatNetworkDhcp, NatNetworkDhcpHost, NatNetworkDns and NatNetworkDnsHost follow them). */
export const natNetworkSettingsSchemas = nestedSchemas(INPUT_RULES);

/**
 * Stored state (read, delete, and update's old inputs) may hold names written
 * before #14's rules; refusing them there would leave no way to update,
 * refresh or destroy the network. The program's new inputs still meet them.
 */
export const natNetworkStoredSchema = natNetworkSchema({ dnsName: storedDnsName, dhcpHostName: storedDnsName, domainPart: false, ifname: storedIfname });

export type NatNetworkInputs = z.output<typeof natNetworkInputsSchema>;
export type DhcpInputs = Exclude<NatNetworkInputs["dhcp"], false>;

/**
 * `kvn-<name>` when it fits IFNAMSIZ (15 characters), else `kvn-` + the first
 * six characters + `-` + four hex digits of a hash of the whole name, so two
 * long names sharing a prefix still get different bridges.
 */
export function defaultBridgeName(name: string): string {
  if (name.length <= 11) return `kvn-${name}`;
  const h = createHash("sha256").update(name).digest("hex").slice(0, 4);
  return `kvn-${name.slice(0, 6)}-${h}`;
}

export function ipToInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

/** Network and broadcast addresses of an IPv4 CIDR, as integers. */
export function subnetRange(cidr: string): { network: number; broadcast: number; prefix: number } {
  const [addr, p] = cidr.split("/");
  const prefix = Number(p);
  const size = 2 ** (32 - prefix);
  const network = Math.floor(ipToInt(addr) / size) * size;
  return { network, broadcast: network + size - 1, prefix };
}

/** True when two IPv4 CIDRs share any address. */
export function cidrsOverlap(a: string, b: string): boolean {
  const x = subnetRange(a);
  const y = subnetRange(b);
  return x.network <= y.broadcast && y.network <= x.broadcast;
}

/** The prefix length of the subnet as a dotted netmask (dnsmasq's dhcp-range wants one). */
export function netmask(cidr: string): string {
  const prefix = subnetRange(cidr).prefix;
  return intToIp(2 ** 32 - 2 ** (32 - prefix));
}

/**
 * What the fault campaign knows about each resource kind: its provider object,
 * a valid set of inputs on a sandbox host, every string field of its args
 * (nested ones by dotted path, array members as `.0`), and the create/update
 * inputs its kill and SSH-cut trials use.
 *
 * The fields are listed by hand rather than found by walking the zod schemas:
 * NatNetwork's `dhcp` is a `z.unknown().transform` (so its nested issues keep
 * their paths) and `connection` is a `z.lazy`, neither of which a walker can
 * see into. A field added to a schema without being added here goes unfuzzed,
 * so `campaignFieldsCover` (called at start) compares the list to the keys of
 * the base inputs.
 */
import type { KindProvider } from "../../provider/resources/kind";
import { bridgeProvider } from "../../provider/resources/bridge";
import { natNetworkProvider } from "../../provider/resources/natNetwork";
import { portForwardProvider } from "../../provider/resources/portForward";
import { vlanSubinterfaceProvider } from "../../provider/resources/vlanSubinterface";
import { pciPassthroughProvider } from "../../provider/resources/pciPassthrough";

export type CampaignKind = "Bridge" | "NatNetwork" | "PortForward" | "VlanSubinterface" | "PciPassthrough";

export const PROVIDERS: Record<CampaignKind, KindProvider> = {
  Bridge: bridgeProvider,
  NatNetwork: natNetworkProvider,
  PortForward: portForwardProvider,
  VlanSubinterface: vlanSubinterfaceProvider,
  PciPassthrough: pciPassthroughProvider,
};

/** What the campaign needs to know of the sandbox host. */
export interface CampaignHost {
  address: string;
  privateKey: string;
  hostKeyFingerprint: string;
  /** The host's uplink address (PortForward hostAddress). */
  uplinkAddress: string;
}

/** Spare interfaces the campaign makes in the sandbox host before its baseline (a veth pair), for Bridge ports. */
export const SPARE_PORTS = ["fzp0", "fzp1"] as const;

export function connectionOf(h: CampaignHost): Record<string, unknown> {
  return { host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint };
}

/**
 * Valid inputs of each kind, with every optional string field set so each can
 * be fuzzed in place. VlanSubinterface and PciPassthrough are only checked
 * (this kernel has no 802.1Q; a sandbox host has no PCI devices).
 */
export function baseArgs(kind: CampaignKind, h: CampaignHost): Record<string, unknown> {
  const connection = connectionOf(h);
  switch (kind) {
    case "Bridge":
      return { connection, name: "fzbr", macAddress: "52:54:00:aa:00:01", ports: [SPARE_PORTS[0]], addresses: ["10.71.0.1/24"], persistence: "runtime" };
    case "NatNetwork":
      return {
        connection,
        name: "fz",
        bridgeName: "kvn-fz",
        mode: "nat",
        subnet: "10.70.0.0/24",
        gateway: "10.70.0.1",
        dhcp: { start: "10.70.0.100", end: "10.70.0.150", hosts: [{ mac: "52:54:00:aa:00:10", ip: "10.70.0.10", hostname: "web" }] },
        dns: { domain: "lab.test", hosts: [{ ip: "10.70.0.20", hostnames: ["db"] }] },
        uplink: "eth0",
        persistence: "runtime",
      };
    case "PortForward":
      return {
        connection,
        protocol: "tcp",
        hostPort: "18080-18081",
        destination: "10.72.0.10",
        destinationPort: "8080-8081",
        hostAddress: h.uplinkAddress,
        sourceCidrs: ["198.19.0.0/24"],
        description: "fuzz",
        persistence: "runtime",
      };
    case "VlanSubinterface":
      return { connection, parent: "eth0", vlanId: 10, name: "eth0.10", protocol: "802.1Q", addresses: ["10.73.0.1/24"], persistence: "runtime" };
    case "PciPassthrough":
      return { connection, address: "0000:00:03.0", driver: "vfio-pci", persistence: "runtime" };
  }
}

/** One string field to fuzz. */
export interface FuzzField {
  /** Dotted path in the args; array members as `.0`. */
  path: string;
  /**
   * Whether a value that passes check may go on to create on the sandbox host.
   * Off where an accepted value would make the provider talk to something
   * other than the sandbox host (connection.host: a DNS name; jumpHost), which
   * the sandbox rules forbid.
   */
  create: boolean;
  /**
   * Base fields to leave out while this one is fuzzed, where the base's value
   * would refuse every value of this field for another reason (a
   * VlanSubinterface with a bridge must have no addresses).
   */
  without?: readonly string[];
}

const f = (path: string, create = true, without?: readonly string[]): FuzzField => ({ path, create, without });

/** Every string field of each kind's args (connection's are fuzzed once, carried by Bridge). */
export const FUZZ_FIELDS: Record<CampaignKind | "Connection", FuzzField[]> = {
  Bridge: [f("name"), f("macAddress"), f("ports.0"), f("addresses.0"), f("persistence")],
  NatNetwork: [
    f("name"),
    f("bridgeName"),
    f("mode"),
    f("subnet"),
    f("gateway"),
    f("dhcp.start"),
    f("dhcp.end"),
    f("dhcp.hosts.0.mac"),
    f("dhcp.hosts.0.ip"),
    f("dhcp.hosts.0.hostname"),
    f("dns.domain"),
    f("dns.hosts.0.ip"),
    f("dns.hosts.0.hostnames.0"),
    f("uplink"),
    f("persistence"),
  ],
  PortForward: [f("protocol"), f("hostPort"), f("destination"), f("destinationPort"), f("hostAddress"), f("sourceCidrs.0"), f("description"), f("persistence")],
  VlanSubinterface: [f("parent"), f("name"), f("protocol"), f("addresses.0"), f("bridge", true, ["addresses"]), f("persistence")],
  PciPassthrough: [f("address"), f("driver"), f("persistence")],
  Connection: [
    f("connection.host", false),
    f("connection.user"),
    f("connection.privateKey"),
    f("connection.privateKeyPassphrase"),
    f("connection.password"),
    f("connection.agent"),
    f("connection.hostKey"),
    f("connection.knownHostsFile"),
    f("connection.sudo.password"),
    f("connection.jumpHost.host", false),
  ],
};

/** Kinds whose create runs on a sandbox host; the others are check-only (they need the lab). */
export const LIVE_KINDS: readonly CampaignKind[] = ["Bridge", "NatNetwork", "PortForward"];

/**
 * String-valued top-level keys of the base args that no field covers: a field
 * added to a kind but not to FUZZ_FIELDS shows up here (empty = all covered).
 */
export function uncoveredStringFields(h: CampaignHost): string[] {
  const missing: string[] = [];
  for (const kind of Object.keys(PROVIDERS) as CampaignKind[]) {
    const covered = new Set(FUZZ_FIELDS[kind].map((x) => x.path.split(".")[0]));
    const leaves = (v: unknown, path: string): string[] => {
      if (typeof v === "string") return [path];
      if (Array.isArray(v)) return v.flatMap((x, i) => leaves(x, `${path}.${i}`));
      if (v && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => leaves(x, path ? `${path}.${k}` : k));
      return [];
    };
    const { connection: _c, ...rest } = baseArgs(kind, h);
    for (const p of leaves(rest, "")) if (!FUZZ_FIELDS[kind].some((x) => x.path === p) && !covered.has(p)) missing.push(`${kind}.${p}`);
  }
  return missing;
}

/** Args with the value at `path` replaced (deep copy; missing objects on the path are made). */
export function withValue(args: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(args)) as Record<string, unknown>;
  const keys = path.split(".");
  let cur: Record<string, unknown> = copy;
  for (const k of keys.slice(0, -1)) {
    if (cur[k] === null || typeof cur[k] !== "object") cur[k] = /^\d+$/.test(k) ? [] : {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keys[keys.length - 1]] = value;
  return copy;
}

/** Inputs of the kill / SSH-cut trials: the object created, and the in-place update applied to it. */
export interface FaultSpec {
  create: Record<string, unknown>;
  update: Record<string, unknown>;
  /** Outputs that show the update took (a read after it must have them as `update` asks). */
  updatedKeys: readonly string[];
}

export function faultSpec(kind: CampaignKind, h: CampaignHost): FaultSpec {
  const connection = connectionOf(h);
  switch (kind) {
    case "Bridge": {
      const create = { connection, name: "kbr", ports: [SPARE_PORTS[0]], addresses: ["10.74.0.1/24"], mtu: 1500 };
      return {
        create,
        update: { ...create, ports: [SPARE_PORTS[0], SPARE_PORTS[1]], addresses: ["10.74.0.1/24", "fd74::1/64"], mtu: 1400, stp: true },
        updatedKeys: ["mtu", "stp"],
      };
    }
    case "NatNetwork": {
      const create = { connection, name: "kn", subnet: "10.75.0.0/24", dhcp: { start: "10.75.0.100", end: "10.75.0.150" }, dns: { domain: "k.test" } };
      return {
        create,
        update: {
          ...create,
          dhcp: { start: "10.75.0.100", end: "10.75.0.160", hosts: [{ mac: "52:54:00:aa:00:20", ip: "10.75.0.20", hostname: "web" }] },
          dns: { domain: "k.test", hosts: [{ ip: "10.75.0.30", hostnames: ["db"] }] },
          mtu: 1400,
        },
        updatedKeys: ["mtu"],
      };
    }
    case "PortForward": {
      const create = { connection, protocol: "tcp", hostPort: 18443, destination: "10.76.0.10", destinationPort: 443, sourceCidrs: ["198.19.0.0/24"] };
      return {
        create,
        update: { ...create, destination: "10.76.0.11", destinationPort: 8443, sourceCidrs: ["198.19.0.0/24", "10.0.0.0/8"], description: "updated" },
        updatedKeys: ["destination", "destinationPort", "description"],
      };
    }
    default:
      throw new Error(`${kind} has no fault trials on a sandbox host`);
  }
}

/**
 * A Bridge's boot-time configuration on the host's own network stack. The
 * bridge describes itself ({@link bridgeDescription}); the backends
 * (provider/persist/networkd.ts, networkManager.ts, ifupdown.ts) write it:
 *
 * - networkd: `05-kvmnet-bridge-<name>.netdev` (the bridge and its options),
 *   `.network` (its addresses), and one `05-kvmnet-bridge-<name>-port-<port>.network`
 *   per port (`Bridge=`). The 05 prefix sorts before an administrator's usual
 *   10-*.network, because networkd applies only the first file that matches a link.
 * - NetworkManager: keyfiles `kvmnet-bridge-<name>.nmconnection` and one
 *   `kvmnet-bridge-<name>-port-<port>.nmconnection` per port (mode 0600, which
 *   NM requires). Ports must be Ethernet NICs (NM types profiles by device).
 * - ifupdown: `/etc/network/interfaces.d/kvmnet-bridge-<name>` with `ip`
 *   commands in pre-up/up/post-down (no bridge-utils needed).
 *
 * The MAC is always written (the program's, or the one the bridge was created
 * with), so the bridge comes back with the same address after a reboot.
 *
 * A taken-over uplink (takeOverUplink) brings its addresses and routes into the
 * bridge's configuration, and its port profile outranks the uplink's own
 * (takeover.ts); ifupdown cannot do that without editing the administrator's
 * stanza, and is refused.
 */
import { KvmnetError } from "../../errors";
import { findLink, HostSnapshot } from "../../observe";
import type { Backend, PersistSet } from "../../persist";
import type { PersistedBridge, PersistFile } from "../../persist/files";
import { ifupdownBridgeStanza } from "../../persist/ifupdown";
import { networkdBridgeFiles } from "../../persist/networkd";
import { nmBridgeKeyfiles } from "../../persist/networkManager";
import { carriesUplink, newBridgeMac, observeBridge } from "./plan";
import { BridgeInputs, desiredOptions } from "./schema";
import { recordAddresses, recordRoutes, takeoverRecord, TakeoverRecord, takeoverRecordPath } from "./takeover";

/** The MAC the bridge has (or will be created with). */
function bridgeMac(b: BridgeInputs, snap: HostSnapshot): string {
  return b.macAddress ?? findLink(snap, b.name)?.address?.toLowerCase() ?? newBridgeMac(b, snap);
}

/** What the bridge's taken-over uplinks bring onto it (empty without takeOverUplink). */
function takeover(b: BridgeInputs, snap: HostSnapshot): TakeoverRecord {
  if (!b.takeOverUplink) return {};
  const obs = observeBridge(snap, b.name);
  return takeoverRecord(b.name, b.ports, snap, { takenOverLive: obs.takenOver, isPort: (p) => obs.ports.includes(p), carries: (p) => carriesUplink(snap, p) });
}

/** What persists of bridge `b`, for any backend. */
export function bridgeDescription(b: BridgeInputs, snap: HostSnapshot, rec: TakeoverRecord): PersistedBridge {
  return {
    owner: `Bridge ${b.name}`,
    stem: `kvmnet-bridge-${b.name}`,
    name: b.name,
    mac: bridgeMac(b, snap),
    mtu: b.mtu,
    stp: b.stp,
    options: desiredOptions(b),
    addresses: b.addresses,
    takenOver: { addresses: recordAddresses(rec), routes: recordRoutes(rec) },
    ports: b.ports.map((p) => ({ name: p, takenOver: rec[p] !== undefined })),
  };
}

/** Whole seconds, for stacks that take no fractions (NetworkManager). */
function wholeSeconds(b: BridgeInputs, field: "forwardDelay" | "helloTime" | "maxAge" | "ageingTime", backend: string): void {
  const v = b[field];
  if (v !== undefined && !Number.isInteger(v)) {
    throw new KvmnetError({
      kind: "InvalidArgument",
      message: `bridge ${b.name}: ${field}: ${backend} takes whole seconds, not ${v}`,
      hint: `round ${field}, or use another persistence backend`,
    });
  }
}

function networkManager(b: BridgeInputs, snap: HostSnapshot, rec: TakeoverRecord): PersistFile[] {
  for (const field of ["forwardDelay", "helloTime", "maxAge", "ageingTime"] as const) wholeSeconds(b, field, "NetworkManager");
  for (const p of b.ports) {
    const link = findLink(snap, p);
    if (link && (link.linkinfo?.info_kind || link.link_type !== "ether")) {
      throw new KvmnetError({
        kind: "Unsupported",
        message: `bridge ${b.name}: port ${p} is a ${link.linkinfo?.info_kind ?? link.link_type} interface; NetworkManager persistence of bridge ports covers Ethernet NICs`,
        hint: 'attach a VLAN to the bridge through VlanSubinterface\'s bridge field, or use persistence: "runtime" for this bridge',
      });
    }
  }
  return nmBridgeKeyfiles(bridgeDescription(b, snap, rec));
}

function ifupdown(b: BridgeInputs, snap: HostSnapshot, rec: TakeoverRecord): PersistFile[] {
  const uplinks = Object.keys(rec);
  if (uplinks.length > 0) {
    // /etc/network/interfaces still configures the uplink itself, and kvmnet does not edit the administrator's stanzas.
    throw new KvmnetError({
      kind: "Unsupported",
      message: `bridge ${b.name}: persistence "ifupdown" of a taken-over uplink (${uplinks.join(", ")}) is not supported: the uplink's own stanza in /etc/network/interfaces would configure it again at boot, and kvmnet does not edit that file`,
      hint: `change the stanza to \`iface ${uplinks[0]} inet manual\` and list the addresses in the bridge's addresses yourself, or set persistence: "runtime" (the bridge is then gone after a reboot and ${uplinks[0]} comes back as it was)`,
    });
  }
  return [ifupdownBridgeStanza(bridgeDescription(b, snap, rec))];
}

export function bridgePersist(b: BridgeInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  const rec = takeover(b, snap);
  const files =
    backend === "networkd" ? networkdBridgeFiles(bridgeDescription(b, snap, rec)) : backend === "networkmanager" ? networkManager(b, snap, rec) : ifupdown(b, snap, rec);
  // The record of what moved: the same rendering after the change and after a reboot, and what delete gives back.
  if (Object.keys(rec).length > 0) files.push({ path: takeoverRecordPath(b.name), content: JSON.stringify(rec, null, 2) });
  return { files };
}

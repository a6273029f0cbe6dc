/**
 * VlanSubinterface persistence: what recreates a VLAN at boot through the
 * host's own network stack (KindSpec.persist). Live changes are still the
 * plan's `ip` commands; these files only take effect at boot (NetworkManager
 * re-reads its keyfiles at once, see provider/persist).
 *
 * The VLAN describes itself ({@link vlanLink}); the backends write it:
 * - systemd-networkd (persist/networkd.ts): `05-kvmnet-vlan-<name>.netdev`,
 *   `.network`, and a drop-in adding `VLAN=` to the parent's .network;
 * - NetworkManager (persist/networkManager.ts): keyfile `kvmnet-vlan-<name>.nmconnection`;
 * - ifupdown (persist/ifupdown.ts): stanza `/etc/network/interfaces.d/kvmnet-vlan-<name>`.
 *
 * A configuration the stack would not bring back at boot is refused here
 * (Unsupported, naming `persistence`), from the host's stack facts
 * (persist/stackFacts.ts), instead of being written and silently failing at boot.
 */
import type { HostSnapshot } from "../../observe";
import { Backend, unsupportedOnStack } from "../../persist";
import type { PersistedLink, PersistFile, PersistSet } from "../../persist/files";
import { ifupdownBringsUp, IFUPDOWN_DIR, ifupdownLinkStanza, ifupdownReads } from "../../persist/ifupdown";
import { networkdCreatesBridge, NETWORKD_DIR, networkdLinkFiles, networkdParentFile } from "../../persist/networkd";
import { nmCreatesBridge, nmLinkKeyfile, NM_VLAN_PROTOCOL_SINCE, versionAtLeast } from "../../persist/networkManager";
import { StackFacts, stackFacts } from "../../persist/stackFacts";
import { VlanSubinterfaceInputs } from "./schema";

/** Our file-name stem: `kvmnet-vlan-<name>`. */
export const persistStem = (name: string) => `kvmnet-vlan-${name}`;

/** What persists of VLAN `desired`, for any backend. */
export function vlanLink(desired: VlanSubinterfaceInputs): PersistedLink {
  const { name, parent } = desired;
  return {
    owner: `vlanSubinterface ${name}`,
    stem: persistStem(name),
    name,
    mtu: desired.mtu,
    addresses: desired.addresses,
    bridge: desired.bridge,
    create: (q) => `ip link add link ${q(parent)} name ${q(name)} type vlan id ${q(desired.vlanId)} protocol ${q(desired.protocol)}`,
    vlan: { id: desired.vlanId, parent, protocol: desired.protocol },
  };
}

function unsupported(desired: VlanSubinterfaceInputs, backend: Backend, why: string, hint: string) {
  return unsupportedOnStack(`vlanSubinterface ${desired.name}`, desired.persistence, backend, why, hint);
}

/** The networkd files of a VLAN whose parent is managed by `parentNetworkFile`. Pure. */
export const renderNetworkd = (desired: VlanSubinterfaceInputs, parentNetworkFile: string): PersistFile[] => networkdLinkFiles(vlanLink(desired), parentNetworkFile);
/** The NetworkManager keyfile of a VLAN. Pure. */
export const renderNetworkManager = (desired: VlanSubinterfaceInputs): PersistFile[] => [nmLinkKeyfile(vlanLink(desired))];
/** The ifupdown stanza of a VLAN. Pure. */
export const renderIfupdown = (desired: VlanSubinterfaceInputs): PersistFile[] => [ifupdownLinkStanza(vlanLink(desired))];

function networkdSet(desired: VlanSubinterfaceInputs, facts: StackFacts): PersistFile[] {
  const parentFile = networkdParentFile(desired.parent, facts);
  if (!parentFile) {
    throw unsupported(
      desired,
      "networkd",
      `needs systemd-networkd to manage the parent ${desired.parent}: networkd creates a VLAN at boot only from the parent's .network file (VLAN=${desired.name}), and no .network file manages ${desired.parent}`,
      `write a .network file that matches ${desired.parent} (e.g. ${NETWORKD_DIR}/10-${desired.parent}.network with "[Match]" Name=${desired.parent}) and run \`networkctl reload\`; this VLAN then adds itself to it with a drop-in`,
    );
  }
  if (desired.bridge !== undefined && !networkdCreatesBridge(facts, desired.bridge)) {
    throw unsupported(
      desired,
      "networkd",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: no .netdev file defines ${desired.bridge}, and networkd ignores Bridge= for a bridge it does not create`,
      `persist the bridge through networkd too (a kvmnet Bridge with persistence "auto" or "networkd"), or define it in a .netdev (Kind=bridge) under ${NETWORKD_DIR}`,
    );
  }
  return renderNetworkd(desired, parentFile);
}

function networkManagerSet(desired: VlanSubinterfaceInputs, facts: StackFacts): PersistFile[] {
  if (desired.protocol === "802.1ad" && (facts.nmVersion === undefined || !versionAtLeast(facts.nmVersion, NM_VLAN_PROTOCOL_SINCE))) {
    throw unsupported(
      desired,
      "networkmanager",
      `cannot bring back an 802.1ad VLAN: NetworkManager ${facts.nmVersion ?? "(version unknown)"} has no vlan.protocol (added in ${NM_VLAN_PROTOCOL_SINCE.join(".")}) and would make it 802.1Q`,
      "upgrade NetworkManager, or use protocol 802.1Q",
    );
  }
  if (facts.nmDevices.get(desired.parent) === "unmanaged") {
    throw unsupported(
      desired,
      "networkmanager",
      `needs NetworkManager to manage the parent ${desired.parent}, which it leaves unmanaged (\`nmcli device\`): NetworkManager activates no VLAN on an unmanaged parent`,
      `let NetworkManager manage ${desired.parent} (for a NIC listed in /etc/network/interfaces: remove it there, or set [ifupdown] managed=true)`,
    );
  }
  if (desired.bridge !== undefined && !nmCreatesBridge(facts, desired.bridge)) {
    throw unsupported(
      desired,
      "networkmanager",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: no NetworkManager profile creates ${desired.bridge}, so the port would wait for it forever`,
      `persist the bridge through NetworkManager too (a kvmnet Bridge with persistence "auto" or "networkmanager"), or add a bridge profile for it (\`nmcli connection add type bridge ifname ${desired.bridge}\`)`,
    );
  }
  return renderNetworkManager(desired);
}

function ifupdownSet(desired: VlanSubinterfaceInputs, facts: StackFacts): PersistFile[] {
  const file = persistStem(desired.name);
  if (!ifupdownReads(file, facts.ifupdownSources)) {
    const dirOnly = facts.ifupdownSources.some((l) => /^source-directory\s/.test(l));
    throw unsupported(
      desired,
      "ifupdown",
      dirOnly
        ? `cannot be read at boot: /etc/network/interfaces takes ${IFUPDOWN_DIR} with source-directory, which skips file names with a dot (${file})`
        : `cannot be read at boot: /etc/network/interfaces does not source ${IFUPDOWN_DIR}/*`,
      dirOnly ? `give the VLAN a name without a dot, or change that line to "source ${IFUPDOWN_DIR}/*"` : `add the line "source ${IFUPDOWN_DIR}/*" to /etc/network/interfaces`,
    );
  }
  if (desired.bridge !== undefined && !ifupdownBringsUp(facts, desired.bridge)) {
    throw unsupported(
      desired,
      "ifupdown",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: ifupdown does not bring ${desired.bridge} up (\`ifquery --list\`), so it will not exist`,
      `persist the bridge through ifupdown too (a kvmnet Bridge with persistence "auto" or "ifupdown"), or add an "auto ${desired.bridge}" stanza that creates it`,
    );
  }
  return renderIfupdown(desired);
}

/** KindSpec.persist: what VLAN `desired` persists through `backend` on this host. Throws Unsupported when the stack could not bring it back. */
export function persistVlan(desired: VlanSubinterfaceInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  const facts = stackFacts(snap);
  switch (backend) {
    case "networkd":
      return { files: networkdSet(desired, facts) };
    case "networkmanager":
      return { files: networkManagerSet(desired, facts) };
    case "ifupdown":
      return { files: ifupdownSet(desired, facts) };
  }
}

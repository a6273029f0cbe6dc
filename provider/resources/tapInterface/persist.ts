/**
 * TapInterface persistence: what makes the tap again at boot through the
 * host's own network stack (KindSpec.persist). Live changes are the plan's
 * `ip` commands; these files only take effect at boot.
 *
 * The tap describes itself ({@link tapLink}); the backends write it:
 * - systemd-networkd: `05-kvmnet-tap-<name>.netdev` (Kind=tap, [Tap] User=,
 *   Group=, MultiQueue=, VNetHeader=; systemd.netdev(5)) and `.network`;
 * - NetworkManager: keyfile `kvmnet-tap-<name>.nmconnection`, type tun, mode 2
 *   (tap); NetworkManager takes owner and group as numeric ids only
 *   (nm-setting-tun), so names are refused there;
 * - ifupdown: a stanza `/etc/network/interfaces.d/kvmnet-tap-<name>` whose
 *   pre-up runs `ip tuntap add`.
 *
 * The host facts (which stanzas ifupdown brings up, which NetworkManager
 * profiles exist) are persist/stackFacts.ts's section.
 */
import { HostSnapshot } from "../../observe";
import { Backend, unsupportedOnStack } from "../../persist";
import type { PersistedLink, PersistFile, PersistSet } from "../../persist/files";
import { ifupdownBringsUp, IFUPDOWN_DIR, ifupdownLinkStanza, ifupdownReads } from "../../persist/ifupdown";
import { networkdLinkFiles } from "../../persist/networkd";
import { nmCreatesBridge, nmLinkKeyfile } from "../../persist/networkManager";
import { StackFacts, stackFacts } from "../../persist/stackFacts";
import { tuntapAddArgs } from "./render";
import { TapInterfaceInputs } from "./schema";

/** Our file-name stem: `kvmnet-tap-<name>`. */
export const tapPersistStem = (name: string) => `kvmnet-tap-${name}`;

/** What persists of tap `desired`, for any backend. */
export function tapLink(desired: TapInterfaceInputs): PersistedLink {
  const { name } = desired;
  return {
    owner: `tapInterface ${name}`,
    stem: tapPersistStem(name),
    name,
    mtu: desired.mtu,
    addresses: [],
    bridge: desired.bridge,
    create: (q) => `ip tuntap add ${tuntapAddArgs(name, desired).map(q).join(" ")}`,
    tap: { owner: desired.owner, group: desired.group, multiQueue: desired.multiQueue, vnetHdr: desired.vnetHdr },
  };
}

function unsupported(desired: TapInterfaceInputs, backend: Backend, why: string, hint: string) {
  return unsupportedOnStack(`tapInterface ${desired.name}`, desired.persistence, backend, why, hint);
}

/** The networkd files of a tap. Pure. */
export const renderTapNetworkd = (desired: TapInterfaceInputs): PersistFile[] => networkdLinkFiles(tapLink(desired));
/** The NetworkManager keyfile of a tap. Pure. */
export const renderTapNetworkManager = (desired: TapInterfaceInputs): PersistFile[] => [nmLinkKeyfile(tapLink(desired))];
/** The ifupdown stanza of a tap. Pure. A bridge that is a stanza not yet run is brought up first (as VlanSubinterface's). */
export const renderTapIfupdown = (desired: TapInterfaceInputs): PersistFile[] => [ifupdownLinkStanza(tapLink(desired))];

function networkManagerSet(desired: TapInterfaceInputs, facts: StackFacts): PersistFile[] {
  for (const [field, v] of [
    ["owner", desired.owner],
    ["group", desired.group],
  ] as const) {
    if (v !== undefined && !/^\d+$/.test(v)) {
      throw unsupported(
        desired,
        "networkmanager",
        `takes ${field} as a numeric id only (NetworkManager's tun.${field}), not the name ${v}`,
        `give ${field} as a number (\`id -u\` / \`getent group\` on the host)`,
      );
    }
  }
  if (desired.bridge !== undefined && !nmCreatesBridge(facts, desired.bridge)) {
    throw unsupported(
      desired,
      "networkmanager",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: no NetworkManager profile creates ${desired.bridge}`,
      `persist the bridge through NetworkManager too (a kvmnet Bridge with persistence "auto" or "networkmanager")`,
    );
  }
  return renderTapNetworkManager(desired);
}

function ifupdownSet(desired: TapInterfaceInputs, facts: StackFacts): PersistFile[] {
  if (!ifupdownReads(tapPersistStem(desired.name), facts.ifupdownSources)) {
    throw unsupported(
      desired,
      "ifupdown",
      `cannot be read at boot: /etc/network/interfaces does not source ${IFUPDOWN_DIR}/* (or a tap name with a dot under source-directory)`,
      `add the line "source ${IFUPDOWN_DIR}/*" to /etc/network/interfaces`,
    );
  }
  if (desired.bridge !== undefined && !ifupdownBringsUp(facts, desired.bridge)) {
    throw unsupported(
      desired,
      "ifupdown",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: ifupdown does not bring ${desired.bridge} up (\`ifquery --list\`)`,
      `persist the bridge through ifupdown too (a kvmnet Bridge with persistence "auto" or "ifupdown")`,
    );
  }
  return renderTapIfupdown(desired);
}

/** KindSpec.persist: what tap `desired` persists through `backend` on this host. Throws Unsupported when the stack could not bring it back. */
export function persistTap(desired: TapInterfaceInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  const facts = stackFacts(snap);
  switch (backend) {
    case "networkd":
      return { files: renderTapNetworkd(desired) };
    case "networkmanager":
      return { files: networkManagerSet(desired, facts) };
    case "ifupdown":
      return { files: ifupdownSet(desired, facts) };
  }
}

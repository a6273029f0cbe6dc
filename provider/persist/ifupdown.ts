/**
 * The ifupdown backend: one stanza per link in /etc/network/interfaces.d,
 * whose pre-up/up/post-down run `ip` (nothing here needs bridge-utils or the
 * `vlan` package). ifupdown reads its files at boot; nothing is reloaded live.
 */
import { sh } from "../shell";
import { linkHeader, PersistedBridge, PersistedLink, PersistFile, writtenBy } from "./files";
import type { StackFacts } from "./stackFacts";

export const IFUPDOWN_DIR = "/etc/network/interfaces.d";

/** Whether `source`/`source-directory` lines make ifupdown read interfaces.d/<file>. */
export function ifupdownReads(file: string, sources: readonly string[]): boolean {
  return sources.some((line) => {
    const [verb, ...rest] = line.split(/\s+/);
    const arg = rest.join(" ");
    if (verb === "source") return /^(\/etc\/network\/)?interfaces\.d\/\*$/.test(arg);
    // source-directory takes run-parts names only: letters, digits, _ and -.
    return verb === "source-directory" && /^(\/etc\/network\/)?interfaces\.d\/?$/.test(arg) && /^[A-Za-z0-9_-]+$/.test(file);
  });
}

/** Does `ifup -a` bring `iface` up (`ifquery --list`)? */
export const ifupdownBringsUp = (facts: StackFacts, iface: string) => facts.ifupdownAuto.includes(iface);

/**
 * The stanza of a link. Pure.
 *
 * `ifup -a` takes stanzas in file order and interfaces.d comes in by a glob,
 * so a VLAN's parent (or the bridge) may be a stanza that has not run yet (a
 * kvmnet Bridge's `kvmnet-bridge-*` sorts before us; an admin's stanza after
 * the `source` line does not): the pre-up brings such an interface up first
 * (nested `ifup` is what bridge-utils' own hooks do). The parent is brought
 * up as create does live, else the VLAN carries nothing.
 *
 * ifupdown 0.8 has VLAN support of its own for `<raw device>.<id>` names: before
 * any pre-up it runs `ip link add link <raw> name <name> type vlan id <id>`
 * from the name alone (always 802.1Q; the id and raw device read from the
 * name, which need not be this VLAN's). So an interface of this name is made
 * anew from the inputs rather than trusted (seen on Debian 12, ifupdown 0.8.41).
 */
export function ifupdownLinkStanza(l: PersistedLink): PersistFile {
  return { path: `${IFUPDOWN_DIR}/${l.stem}`, content: stanzaText(l, quoted), accepts: [stanzaText(l, String)] };
}

/** A value as sh reads it, through shell.ts. */
const quoted = (value: string | number) => sh`${value}`.text;

/**
 * The stanza's text, each value written by `q`: quoted (what we write), or
 * as it is (what versions before the quoting fix wrote, read back as in sync:
 * the schemas admit no value that reads differently in sh).
 */
function stanzaText(l: PersistedLink, q: (value: string | number) => string): string {
  const { name, bridge, vlan } = l;
  const dev = (i: string) => q(`/sys/class/net/${i}`);
  const lines = [
    linkHeader(l.owner),
    `auto ${name}`,
    `iface ${name} inet manual`,
    ...(vlan ? [`\tpre-up [ -e ${dev(vlan.parent)} ] || ifup ${q(vlan.parent)}`, `\tpre-up ip link set dev ${q(vlan.parent)} up`] : []),
    `\tpre-up [ ! -e ${dev(name)} ] || ip link del dev ${q(name)}`,
    `\tpre-up ${l.create(q)}`,
    ...(l.mtu !== undefined ? [`\tpre-up ip link set dev ${q(name)} mtu ${q(l.mtu)}`] : []),
    ...(bridge !== undefined ? [`\tpre-up [ -e ${dev(bridge)} ] || ifup ${q(bridge)}`] : []),
    `\tup ip link set dev ${q(name)} up`,
    ...l.addresses.map((a) => `\tup ip addr add ${q(a)} dev ${q(name)}`),
    ...(bridge !== undefined ? [`\tup ip link set dev ${q(name)} master ${q(bridge)}`] : []),
    `\tpost-down [ ! -e ${dev(name)} ] || ip link del dev ${q(name)}`,
  ];
  return lines.join("\n") + "\n";
}

/** The stanza of a bridge (no taken-over uplink: the Bridge kind refuses that on ifupdown). Pure. */
export function ifupdownBridgeStanza(b: PersistedBridge): PersistFile {
  const words: (string | number)[] = [];
  for (const [k, v] of Object.entries(b.options) as [string, number | undefined][]) if (v !== undefined) words.push(k, v);
  const lines = [
    writtenBy(b.owner),
    `auto ${b.name}`,
    `iface ${b.name} inet manual`,
    `\tpre-up ${sh`ip link add name ${b.name} address ${b.mac} type bridge ${words}`.text}`,
    ...(b.mtu !== undefined ? [`\tpre-up ${sh`ip link set dev ${b.name} mtu ${b.mtu}`.text}`] : []),
    ...b.ports.map(({ name: p }) => `\tpre-up ${sh`ip link set dev ${p} master ${b.name}`.text} && ${sh`ip link set dev ${p} up`.text}`),
    ...b.addresses.map((a) => `\tup ${sh`ip addr add ${a} dev ${b.name}`.text}`),
    `\tpost-down ${sh`ip link del dev ${b.name}`.text}`,
  ];
  return { path: `${IFUPDOWN_DIR}/${b.stem}`, content: lines.join("\n") };
}

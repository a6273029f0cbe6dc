/**
 * Helpers shared by the lab's persistence tests (test/lab/*Persistence.test.ts,
 * persistMatrix.test.ts): driving a kind's provider as the engine does, what a
 * boot could read, polling, releasing the guest, diagnostics.
 *
 * Test files cannot import each other (a .test.ts registers its tests when
 * imported), so what several of them need lives here.
 */
import { execFileSync } from "child_process";
import { closeAllConnections } from "../../provider/host";
import type { KindProvider } from "../../provider/resources/kind";
import type { LabHost } from "../../testbed/labHost";

/** The `connection` input of every kind, for a lab guest (host key pinned). */
export function connectionOf(lab: LabHost) {
  return { host: lab.address, port: lab.port, user: "root", privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint };
}

/** A link as `ip -j -d link` shows it (the fields the lab tests read). */
export interface LabLink {
  ifindex: number;
  mtu: number;
  master?: string;
  flags: string[];
  link?: string;
  linkinfo?: { info_kind?: string; info_data?: { protocol?: string; id?: number } };
}

/** Link `name` on the guest, or undefined when there is none. */
export async function labLink(lab: LabHost, name: string): Promise<LabLink | undefined> {
  const r = await lab.exec(`ip -j -d link show dev ${name}`, { allowFail: true });
  return r.code === 0 ? (JSON.parse(r.stdout) as LabLink[])[0] : undefined;
}

/** The addresses of `name` on the guest (link-local ones left out), as CIDRs. */
export async function labAddrs(lab: LabHost, name: string): Promise<string[]> {
  const r = JSON.parse((await lab.exec(`ip -j addr show dev ${name}`)).stdout) as { addr_info: { local: string; prefixlen: number; scope: string }[] }[];
  return (r[0]?.addr_info ?? []).filter((a) => a.scope !== "link").map((a) => `${a.local}/${a.prefixlen}`);
}

export interface Created {
  id: string;
  outs: Record<string, unknown>;
  /** The checked inputs (what the engine would pass to diff/update). */
  inputs: Record<string, unknown>;
}

/** check + create, as the engine calls them; check failures throw, naming the fields. */
export async function createThrough(p: KindProvider, lab: LabHost, args: Record<string, unknown>): Promise<Created> {
  const checked = await p.check({}, { connection: connectionOf(lab), ...args });
  if (checked.failures?.length) throw new Error(`check failed: ${JSON.stringify(checked.failures)}`);
  const c = await p.create(checked.inputs);
  return { id: c.id, outs: c.outs, inputs: checked.inputs };
}

/** Every directory whose files a boot could read and where some kind writes (persisted files, units, rules, our manifests). */
export const BOOT_DIRS = [
  "/etc/systemd/network",
  "/etc/NetworkManager/system-connections",
  "/etc/network/interfaces.d",
  "/etc/systemd/system",
  "/etc/sysctl.d",
  "/etc/udev/rules.d",
  "/etc/kvmnet",
  "/etc/modprobe.d",
  "/etc/modules-load.d",
] as const;

/**
 * One line per entry under {@link BOOT_DIRS} (type, mode, path, link target),
 * then a sha256 of every regular file there: a file added, removed, re-linked,
 * re-moded or edited changes the listing.
 */
export const BOOT_LISTING =
  `find ${BOOT_DIRS.join(" ")} -printf '%y %m %p %l\\n' 2>/dev/null | sort; ` + `find ${BOOT_DIRS.join(" ")} -type f -exec sha256sum {} + 2>/dev/null | sort -k2; true`;

/** The lines of `after` that `before` does not have, and the reverse. */
export function listingDiff(before: string, after: string): { added: string[]; removed: string[] } {
  const b = new Set(before.split("\n").filter(Boolean));
  const a = new Set(after.split("\n").filter(Boolean));
  return { added: [...a].filter((l) => !b.has(l)), removed: [...b].filter((l) => !a.has(l)) };
}

/** `o` without `keys` (fields that legitimately change across a reboot: ifindex, a daemon's pid). */
export function without(o: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

/** Poll `probe` until it returns true (every 500 ms, up to `ms`); returns how long it took, or throws naming `what`. */
export async function waitFor(what: string, ms: number, probe: () => Promise<boolean>): Promise<number> {
  const t = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - t;
    if (Date.now() - t > ms) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The driver PCI device `address` is bound to ("" when none). */
export async function driverOf(lab: LabHost, address: string): Promise<string> {
  return (await lab.exec(`d=$(readlink /sys/bus/pci/devices/${address}/driver) || d=; echo "\${d##*/}"`)).stdout.trim();
}

/** Name of the NIC with each MAC (lower case MAC → name); links stacked on another (a VLAN shares its parent's MAC) are left out. */
export async function namesByMac(lab: LabHost): Promise<Map<string, string>> {
  const links = JSON.parse((await lab.exec("ip -j link")).stdout) as { ifname: string; address?: string; link?: string }[];
  const out = new Map<string, string>();
  for (const l of links) if (l.address && l.link === undefined && !out.has(l.address.toLowerCase())) out.set(l.address.toLowerCase(), l.ifname);
  return out;
}

/** After a lab test file: drop the provider's SSH connections, stop the guest, remove the test's LAN namespace (when it made one). */
export async function releaseLab(lab: LabHost | undefined, ns?: string): Promise<void> {
  closeAllConnections();
  await lab?.shutdown();
  if (ns === undefined) return;
  try {
    execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  } catch {
    /* not created */
  }
}

/** What the guest's network stacks (and `units`, journal only) say, for a failure's message. */
export async function stackDiagnostics(lab: LabHost, units: string[] = []): Promise<string> {
  const journal = ["systemd-networkd", "NetworkManager", "networking", ...units].map((u) => `-u '${u}'`).join(" ");
  return (
    await lab.exec(
      "ip -br link; ip -br addr; networkctl list --no-pager 2>/dev/null; nmcli -t -f DEVICE,STATE,CONNECTION device 2>/dev/null; systemctl --failed --no-legend; " +
        `journalctl -b --no-pager ${journal} 2>/dev/null | tail -n 80; true`,
      { allowFail: true },
    )
  ).stdout;
}

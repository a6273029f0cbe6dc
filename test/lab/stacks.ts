/**
 * Switch a lab guest (testbed/labHost.ts) to ONE network stack — ifupdown,
 * systemd-networkd or NetworkManager — and reboot into it, so persistence can be
 * proven per backend across a real reboot (docs/TESTING.md, tier 3).
 *
 * Whatever the stack, eth0 (the slirp NIC, pinned by MAC in the image) gets the
 * same static config: 10.0.2.15/24, default route via 10.0.2.2.
 * - ifupdown: the image's default /etc/network/interfaces (lo + eth0), networking.service.
 * - networkd: /etc/systemd/network/10-lab-eth0.network (matches eth0 by name AND
 *   MAC: a VLAN or bridge that inherits eth0's MAC does not match),
 *   systemd-networkd.service + .socket. /etc/network/interfaces keeps only lo.
 * - networkmanager: keyfile /etc/NetworkManager/system-connections/lab-eth0.nmconnection
 *   (mode 0600, or NM ignores it), NetworkManager.service. /etc/network/interfaces
 *   keeps only lo: NM's ifupdown plugin (managed=false) leaves every interface
 *   listed there unmanaged, so eth0 must leave that file for NM to manage it.
 * /etc/network/interfaces always exists and always keeps
 * `source /etc/network/interfaces.d/*`. The other stacks' services are disabled
 * AND masked (masking also stops D-Bus activation of NetworkManager and
 * networkd), so after the reboot exactly one is active — which is what the
 * provider's persistence detection (provider/persist: NetworkManager active →
 * networkmanager; else systemd-networkd active → networkd; else ifupdown when
 * networking.service is active or /run/network/ifstate exists, and ifup exists;
 * else runtime) then reports. The wait-online units stay disabled, as the image
 * has it for NetworkManager: nothing in the lab waits for network-online.target.
 *
 * Note the image's own default is NOT one stack: a fresh boot runs both
 * networking.service (eth0) and NetworkManager (the other NICs), which the
 * detection reports as networkmanager. useNetworkStack(lab, "ifupdown") makes it
 * ifupdown only.
 *
 * Nothing changes live: the switch writes files and unit links, then reboots.
 */
import type { LabHost, RebootResult } from "../../testbed/labHost";

export type NetworkStack = "ifupdown" | "networkd" | "networkmanager";
export const NETWORK_STACKS: readonly NetworkStack[] = ["ifupdown", "networkd", "networkmanager"];

/**
 * The stacks a per-kind lab test runs on: KVMNET_LAB_STACK ("all", or a comma
 * list such as "networkd,ifupdown") when set, else the test's own default.
 * Each reboot costs about a minute under TCG, so `npm test` runs every per-kind
 * test on one stack (each has passed on all three).
 */
export function labStacks(defaults: readonly NetworkStack[]): NetworkStack[] {
  const env = process.env.KVMNET_LAB_STACK?.trim();
  if (!env) return [...defaults];
  if (env === "all") return [...NETWORK_STACKS];
  const picked = env.split(",").map((x) => x.trim()) as NetworkStack[];
  for (const x of picked) if (!NETWORK_STACKS.includes(x)) throw new Error(`KVMNET_LAB_STACK: unknown stack ${JSON.stringify(x)} (one of ${NETWORK_STACKS.join(", ")}, or "all")`);
  return picked;
}

export const LAB_ETH0 = { address: "10.0.2.15", prefixlen: 24, gateway: "10.0.2.2" } as const;

export const STACK_PATHS = {
  interfaces: "/etc/network/interfaces",
  networkd: "/etc/systemd/network/10-lab-eth0.network",
  networkmanager: "/etc/NetworkManager/system-connections/lab-eth0.nmconnection",
} as const;

/** A fixed UUID for the lab's NetworkManager profile (NM needs one; it must not change between switches). */
const NM_UUID = "6b766c61-6230-4e74-8830-6b766c616230";

/** The units each stack runs at boot (enabled), and the ones masked when another stack is chosen. */
const UNITS: Record<NetworkStack, { enable: string[]; mask: string[] }> = {
  ifupdown: { enable: ["networking.service"], mask: ["networking.service"] },
  networkd: { enable: ["systemd-networkd.socket", "systemd-networkd.service"], mask: ["systemd-networkd.service", "systemd-networkd.socket"] },
  networkmanager: { enable: ["NetworkManager.service"], mask: ["NetworkManager.service"] },
};
const WAIT_ONLINE = ["systemd-networkd-wait-online.service", "NetworkManager-wait-online.service"];

export function interfacesFile(withEth0: boolean): string {
  return [
    "# kvmnet lab (test/lab/stacks.ts): eth0 is QEMU's user-mode (slirp) NIC; the host",
    `# reaches sshd through a forwarded loopback port. ${withEth0 ? "ifupdown configures eth0." : "eth0 is configured by another stack."}`,
    "source /etc/network/interfaces.d/*",
    "",
    "auto lo",
    "iface lo inet loopback",
    ...(withEth0 ? ["", "auto eth0", "iface eth0 inet static", `\taddress ${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`, `\tgateway ${LAB_ETH0.gateway}`] : []),
    "",
  ].join("\n");
}

export function networkdFile(mac: string): string {
  return [
    "# kvmnet lab (test/lab/stacks.ts): eth0, the slirp NIC.",
    "[Match]",
    "Name=eth0",
    `MACAddress=${mac.toLowerCase()}`,
    "",
    "[Network]",
    `Address=${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`,
    `Gateway=${LAB_ETH0.gateway}`,
    "LLMNR=no",
    "MulticastDNS=no",
    "",
  ].join("\n");
}

export function nmKeyfile(mac: string): string {
  return [
    "# kvmnet lab (test/lab/stacks.ts): eth0, the slirp NIC.",
    "[connection]",
    "id=lab-eth0",
    `uuid=${NM_UUID}`,
    "type=ethernet",
    "interface-name=eth0",
    "autoconnect=true",
    "autoconnect-priority=100",
    "",
    "[ethernet]",
    `mac-address=${mac.toUpperCase()}`,
    "",
    "[ipv4]",
    "method=manual",
    `address1=${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`,
    `gateway=${LAB_ETH0.gateway}`,
    "may-fail=false",
    "",
    "[ipv6]",
    // As under ifupdown: the kernel's own IPv6 (link-local, SLAAC) is left alone.
    "method=ignore",
    "",
  ].join("\n");
}

/** systemctl is-active of each stack's units, as the guest reports it. */
export interface ActiveStack {
  /** What the provider's detection makes of it. */
  stack: NetworkStack | "runtime";
  /** The stacks whose services are active (exactly one after useNetworkStack). */
  active: NetworkStack[];
  units: Record<"NetworkManager" | "systemd-networkd" | "systemd-networkd.socket" | "networking", string>;
  /** /run/network/ifstate exists (ifup ran this boot). */
  ifstate: boolean;
  /** `ifup` is installed. */
  ifup: boolean;
}

const UNIT_NAMES = ["NetworkManager", "systemd-networkd", "systemd-networkd.socket", "networking"] as const;

/** Which stack is active, with the same facts and rules as the provider's detection (provider/persist). */
export async function activeStack(lab: LabHost): Promise<ActiveStack> {
  const out = (
    await lab.exec(
      `for u in ${UNIT_NAMES.join(" ")}; do printf 'active %s %s\\n' "$u" "$(systemctl is-active "$u" 2>/dev/null)"; done; ` +
        "[ -e /run/network/ifstate ] && echo 'ifstate yes'; command -v ifup >/dev/null 2>&1 && echo 'ifup yes'; true",
    )
  ).stdout;
  const units = Object.fromEntries(UNIT_NAMES.map((u) => [u, ""])) as ActiveStack["units"];
  for (const m of out.matchAll(/^active (\S+) (\S*)$/gm)) if ((UNIT_NAMES as readonly string[]).includes(m[1])) units[m[1] as keyof ActiveStack["units"]] = m[2]!;
  const ifstate = /^ifstate yes$/m.test(out);
  const ifup = /^ifup yes$/m.test(out);
  const nm = units.NetworkManager === "active";
  const networkd = units["systemd-networkd"] === "active";
  const ifupdown = ifup && (units.networking === "active" || ifstate);
  const active: NetworkStack[] = [];
  if (units.networking === "active") active.push("ifupdown");
  if (networkd || units["systemd-networkd.socket"] === "active") active.push("networkd");
  if (nm) active.push("networkmanager");
  return { stack: nm ? "networkmanager" : networkd ? "networkd" : ifupdown ? "ifupdown" : "runtime", active, units, ifstate, ifup };
}

/** eth0 as the guest has it, and what each stack says about it. */
export interface Eth0Facts {
  mac?: string;
  /** IPv4 addresses, "a.b.c.d/len". */
  ipv4: string[];
  /** Default routes (all devices). */
  defaultRoutes: { gateway?: string; dev?: string }[];
  /** `ifquery --state eth0` (ifupdown brought it up: "eth0=eth0"). */
  ifupdown: string;
  /** `networkctl list eth0` line (networkd: "... routable configured"). */
  networkd: string;
  /** `nmcli -g GENERAL.STATE,GENERAL.CONNECTION device show eth0` (NM: "100 (connected)", "lab-eth0"). */
  networkmanager: string;
}

export async function eth0Facts(lab: LabHost): Promise<Eth0Facts> {
  const sec = (name: string) => `echo "@@${name}"`;
  const out = (
    await lab.exec(
      [
        sec("link"),
        "ip -j link show dev eth0 2>/dev/null || echo '[]'",
        sec("addr"),
        "ip -j -4 addr show dev eth0 2>/dev/null || echo '[]'",
        sec("routes"),
        "ip -j route show default",
        sec("ifupdown"),
        "ifquery --state eth0 2>&1",
        sec("networkd"),
        "networkctl list --no-pager --no-legend eth0 2>&1",
        sec("networkmanager"),
        "nmcli -g GENERAL.STATE,GENERAL.CONNECTION device show eth0 2>&1",
        "true",
      ].join("; "),
    )
  ).stdout;
  const sections = new Map<string, string>();
  for (const part of out.split(/^@@/m).slice(1)) {
    const nl = part.indexOf("\n");
    sections.set(part.slice(0, nl), part.slice(nl + 1).trim());
  }
  const json = <T>(name: string): T => JSON.parse(sections.get(name) || "[]") as T;
  const link = json<{ address?: string }[]>("link")[0];
  const addr = json<{ addr_info?: { family?: string; local: string; prefixlen: number }[] }[]>("addr")[0];
  return {
    mac: link?.address,
    ipv4: (addr?.addr_info ?? []).filter((a) => a.family === undefined || a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`),
    defaultRoutes: json<{ gateway?: string; dev?: string }[]>("routes").map((r) => ({ gateway: r.gateway, dev: r.dev })),
    ifupdown: sections.get("ifupdown") ?? "",
    networkd: sections.get("networkd") ?? "",
    networkmanager: sections.get("networkmanager") ?? "",
  };
}

/** What is wrong with eth0 for `stack` (empty when nothing): address, default route, and the stack itself reporting it configured. */
export function eth0Problems(stack: NetworkStack, f: Eth0Facts, mac: string): string[] {
  const p: string[] = [];
  if (f.mac !== mac.toLowerCase()) p.push(`eth0 has MAC ${f.mac ?? "(no eth0)"}, not the slirp NIC's ${mac}`);
  if (!f.ipv4.includes(`${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`)) p.push(`eth0 has ${JSON.stringify(f.ipv4)}, not ${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`);
  if (!f.defaultRoutes.some((r) => r.gateway === LAB_ETH0.gateway && r.dev === "eth0"))
    p.push(`no default route via ${LAB_ETH0.gateway} dev eth0: ${JSON.stringify(f.defaultRoutes)}`);
  if (stack === "ifupdown" && !/^eth0=eth0$/m.test(f.ifupdown)) p.push(`ifupdown did not bring eth0 up (ifquery --state: ${JSON.stringify(f.ifupdown)})`);
  if (stack === "networkd" && !/\beth0\s+ether\s+\S+\s+configured\b/.test(f.networkd))
    p.push(`networkd does not report eth0 configured (networkctl: ${JSON.stringify(f.networkd)})`);
  if (stack === "networkmanager" && !/^100\b[\s\S]*^lab-eth0$/m.test(f.networkmanager))
    p.push(`NetworkManager does not report eth0 connected with lab-eth0 (nmcli: ${JSON.stringify(f.networkmanager)})`);
  return p;
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

/** The shell that writes `stack`'s files and unit links (nothing live). Exported for inspection. */
export function switchScript(stack: NetworkStack, mac: string): string {
  const others = (Object.keys(UNITS) as NetworkStack[]).filter((s) => s !== stack);
  const allUnits = [...new Set(Object.values(UNITS).flatMap((u) => [...u.enable, ...u.mask]))];
  const put = (path: string, mode: string, content: string) =>
    `printf '%s' '${b64(content)}' | base64 -d >'${path}.kvl-tmp' && chmod ${mode} '${path}.kvl-tmp' && chown root:root '${path}.kvl-tmp' && mv -f '${path}.kvl-tmp' '${path}'`;
  return [
    "set -eu",
    "mkdir -p /etc/network /etc/systemd/network /etc/NetworkManager/system-connections",
    put(STACK_PATHS.interfaces, "0644", interfacesFile(stack === "ifupdown")),
    stack === "networkd" ? put(STACK_PATHS.networkd, "0644", networkdFile(mac)) : `rm -f '${STACK_PATHS.networkd}'`,
    stack === "networkmanager" ? put(STACK_PATHS.networkmanager, "0600", nmKeyfile(mac)) : `rm -f '${STACK_PATHS.networkmanager}'`,
    // Unit links only (--no-reload: each reload costs seconds under TCG); one reload at the end.
    `systemctl unmask --quiet --no-reload ${allUnits.join(" ")}`,
    `systemctl disable --quiet --no-reload ${others.flatMap((o) => UNITS[o].mask).join(" ")}`,
    `systemctl mask --quiet --no-reload ${others.flatMap((o) => UNITS[o].mask).join(" ")}`,
    `systemctl enable --quiet --no-reload ${UNITS[stack].enable.join(" ")}`,
    // `enable` follows Also= and enables the wait-online units too: nothing here waits for them.
    `systemctl disable --quiet --no-reload ${WAIT_ONLINE.join(" ")}`,
    "systemctl daemon-reload",
    "sync",
  ].join("\n");
}

export interface StackSwitch {
  stack: NetworkStack;
  /** Writing files and unit links. */
  switchMs: number;
  reboot: RebootResult;
  /** After SSH answered: until `systemctl is-system-running --wait` returned. */
  settleMs: number;
  /** After that: until exactly the stack was active and reported eth0 configured (polled, default limit 60 s). */
  configureMs: number;
  /** "running" or "degraded" (then `failedUnits` says which). */
  systemState: string;
  failedUnits: string[];
  active: ActiveStack;
  eth0: Eth0Facts;
}

/**
 * Make `stack` the one that configures eth0, reboot, and check after the reboot that
 * exactly that stack is active (and is what the provider's detection reports) and
 * that eth0 has 10.0.2.15/24 with the default route via 10.0.2.2, configured by that
 * stack (polled for up to `configureTimeoutMs`, default 60 s, after the boot's jobs
 * finished). Throws, naming what is wrong, otherwise.
 */
export async function useNetworkStack(lab: LabHost, stack: NetworkStack, opts: { rebootTimeoutMs?: number; configureTimeoutMs?: number } = {}): Promise<StackSwitch> {
  if (!NETWORK_STACKS.includes(stack)) throw new Error(`useNetworkStack: unknown stack ${JSON.stringify(stack)}`);
  const mac = lab.macs.eth0;
  const t0 = Date.now();
  await lab.exec(switchScript(stack, mac), { timeoutMs: 120_000 });
  const switchMs = Date.now() - t0;
  const reboot = await lab.reboot(opts.rebootTimeoutMs !== undefined ? { timeoutMs: opts.rebootTimeoutMs } : {});
  // SSH answers as soon as eth0 is up; wait for the boot's jobs to finish so
  // "activating" units have settled before they are judged.
  const s0 = Date.now();
  const systemState = (await lab.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 180_000 })).stdout.trim();
  const settleMs = Date.now() - s0;
  const failedUnits =
    systemState === "running"
      ? []
      : (await lab.exec("systemctl --failed --no-legend --plain", { allowFail: true })).stdout
          .split("\n")
          .map((l) => l.trim().split(/\s+/)[0] ?? "")
          .filter(Boolean);
  // A stack may still be finishing eth0 when the boot's jobs are done (networkd was
  // seen at "routable configuring" then, with the address and route already in
  // place): poll, bounded.
  const c0 = Date.now();
  const deadline = c0 + (opts.configureTimeoutMs ?? 60_000);
  let active: ActiveStack;
  let eth0: Eth0Facts;
  let problems: string[];
  for (;;) {
    active = await activeStack(lab);
    eth0 = await eth0Facts(lab);
    problems = [];
    if (!["running", "degraded"].includes(systemState)) problems.push(`systemd state is ${JSON.stringify(systemState)}`);
    if (active.active.length !== 1 || active.active[0] !== stack)
      problems.push(`active stacks are [${active.active.join(", ")}], not exactly [${stack}] (${JSON.stringify(active.units)})`);
    if (active.stack !== stack) problems.push(`the provider's detection would report ${active.stack}, not ${stack}`);
    problems.push(...eth0Problems(stack, eth0, mac));
    if (problems.length === 0 || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const configureMs = Date.now() - c0;
  if (problems.length > 0) {
    throw new Error(
      `useNetworkStack(${stack}): ${configureMs} ms after the reboot's jobs finished:\n- ${problems.join("\n- ")}${failedUnits.length ? `\nfailed units: ${failedUnits.join(" ")}` : ""}`,
    );
  }
  return { stack, switchMs, reboot, settleMs, configureMs, systemState, failedUnits, active, eth0 };
}

/**
 * What the fault campaign looks at on its sandbox host besides the provider's
 * own answers: snapshot differences in words, processes in the host's
 * namespace, the host lock, canary files, and a scrub back to the baseline
 * (so one trial's leftovers never become the next trial's Conflict).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import { isDeepStrictEqual } from "util";
import type { SandboxHost } from "../../testbed/fleet";
import { LOCK_FILE } from "../../provider/observe";
import { CANARY_PREFIX } from "./values";

type Obj = Record<string, unknown>;
/** An `ip -j route` entry: the fields a difference is described by. */
type Route = Obj & { dst?: string; dev?: string; table?: string | number };

interface Snap {
  links: Obj[];
  addresses: Obj[];
  routes: Route[];
  routes6: Route[];
  nftables: { nftables?: Obj[] } | Obj[];
  sysctls: Record<string, string>;
  files: { path: string; type: string }[];
}

const byName = (xs: Obj[]) => new Map(xs.map((x) => [String(x.ifname), x]));

function nftTables(n: Snap["nftables"]): Map<string, Obj[]> {
  const items = Array.isArray(n) ? [] : (n.nftables ?? []);
  const out = new Map<string, Obj[]>();
  for (const item of items) {
    const [type, body] = Object.entries(item)[0] ?? [];
    if (!body || typeof body !== "object") continue;
    const b = body as Obj;
    const key = type === "table" ? `${String(b.family)} ${String(b.name)}` : `${String(b.family)} ${String(b.table)}`;
    if (!out.has(key)) out.set(key, []);
    out.get(key)!.push(item);
  }
  return out;
}

/** The differences between two snapshots (snapshotHost), in words; empty when equal. */
export function describeDiff(before: unknown, after: unknown): string[] {
  const a = before as Snap;
  const b = after as Snap;
  const out: string[] = [];
  const la = byName(a.links);
  const lb = byName(b.links);
  for (const n of lb.keys()) if (!la.has(n)) out.push(`link ${n} added`);
  for (const n of la.keys()) if (!lb.has(n)) out.push(`link ${n} removed`);
  for (const [n, x] of la) {
    const y = lb.get(n);
    if (!y || isDeepStrictEqual(x, y)) continue;
    const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => !isDeepStrictEqual(x[k], y[k]));
    out.push(`link ${n} changed (${keys.join(", ")})`);
  }
  const aa = byName(a.addresses);
  for (const [n, y] of byName(b.addresses)) {
    const x = aa.get(n);
    if (x && !isDeepStrictEqual(x.addr_info, y.addr_info)) out.push(`addresses of ${n} changed`);
  }
  for (const [fam, ra, rb] of [
    ["ipv4", a.routes, b.routes],
    ["ipv6", a.routes6, b.routes6],
  ] as const) {
    const sa = new Set(ra.map((r) => JSON.stringify(r)));
    const sb = new Set(rb.map((r) => JSON.stringify(r)));
    for (const r of rb) if (!sa.has(JSON.stringify(r))) out.push(`${fam} route added: ${r.dst} dev ${r.dev}${r.table ? ` table ${r.table}` : ""}`);
    for (const r of ra) if (!sb.has(JSON.stringify(r))) out.push(`${fam} route removed: ${r.dst} dev ${r.dev}${r.table ? ` table ${r.table}` : ""}`);
  }
  const ta = nftTables(a.nftables);
  const tb = nftTables(b.nftables);
  for (const k of tb.keys()) if (!ta.has(k)) out.push(`nft table ${k} added`);
  for (const k of ta.keys()) if (!tb.has(k)) out.push(`nft table ${k} removed`);
  for (const [k, x] of ta) if (tb.has(k) && !isDeepStrictEqual(x, tb.get(k))) out.push(`nft table ${k} changed`);
  for (const k of Object.keys(b.sysctls)) if (a.sysctls[k] !== b.sysctls[k]) out.push(`sysctl ${k} ${a.sysctls[k]} → ${b.sysctls[k]}`);
  const fa = new Map(a.files.map((f) => [f.path, f]));
  const fb = new Map(b.files.map((f) => [f.path, f]));
  for (const [p, f] of fb) if (!fa.has(p)) out.push(`${f.type === "d" ? "dir" : "file"} ${p} added`);
  for (const p of fa.keys()) if (!fb.has(p)) out.push(`file ${p} removed`);
  for (const [p, f] of fa) if (fb.has(p) && !isDeepStrictEqual(f, fb.get(p))) out.push(`file ${p} changed`);
  return out;
}

/** One process: pid, parent, command name, arguments. */
export interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  args: string;
}

/** Every process of this machine (the sandbox shares its pid namespace). */
export function processes(): Proc[] {
  const r = spawnSync("ps", ["-e", "-o", "pid=,ppid=,comm=,args="], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => {
      const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s*(.*)$/.exec(l);
      return m ? { pid: Number(m[1]), ppid: Number(m[2]), comm: m[3], args: m[4] } : undefined;
    })
    .filter((p): p is Proc => p !== undefined);
}

/** Pids in the host's network namespace. */
export function netnsPids(h: SandboxHost): number[] {
  const r = spawnSync("ip", ["netns", "pids", h.netns], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

/** `root` and every process below it. */
export function descendants(root: number, procs: Proc[] = processes()): Set<number> {
  const out = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) {
      if (out.has(p.ppid) && !out.has(p.pid)) {
        out.add(p.pid);
        grew = true;
      }
    }
  }
  return out;
}

/** sshd processes serving SSH sessions on the host (below its listener, the listener excluded). */
export function sshSessionPids(h: SandboxHost): number[] {
  const procs = processes();
  const below = descendants(h.sshdPid, procs);
  return procs.filter((p) => p.pid !== h.sshdPid && below.has(p.pid) && p.comm.startsWith("sshd")).map((p) => p.pid);
}

/**
 * Processes in the host's namespace that are neither in `baseline` nor part of
 * a live SSH session: after a final delete, anything here outlived its object
 * (a dnsmasq left running, an apply script orphaned by a kill).
 */
export function strayProcesses(h: SandboxHost, baseline: ReadonlySet<number>): Proc[] {
  const procs = processes();
  const sessions = descendants(h.sshdPid, procs);
  const inNs = new Set(netnsPids(h));
  return procs.filter((p) => inNs.has(p.pid) && !baseline.has(p.pid) && !sessions.has(p.pid));
}

/** Is the host-wide lock free (flock -n succeeds)? */
export async function lockFree(h: SandboxHost): Promise<boolean> {
  const r = await h.exec(`mkdir -p /run/lock && flock -n ${LOCK_FILE} true`, { allowFail: true });
  return r.code === 0;
}

/** Canary files on the host (its mount namespace) and on this machine, by name. */
export async function findCanaries(h: SandboxHost): Promise<{ where: string; name: string }[]> {
  const base = CANARY_PREFIX.slice("/tmp/".length);
  const out: { where: string; name: string }[] = [];
  const r = await h.exec(`ls -1a /tmp /root / 2>/dev/null | grep -F -- ${base} || true`, { allowFail: true });
  for (const n of r.stdout.split("\n").filter(Boolean)) out.push({ where: "sandbox host", name: n });
  for (const dir of ["/tmp", "/"]) {
    for (const n of fs.readdirSync(dir)) if (n.includes(base)) out.push({ where: `machine ${dir}`, name: n });
  }
  return out;
}

/** Lines of files the provider writes (and of the nft ruleset) holding `marker` ([a-z0-9-] only). */
export async function linesWithMarker(h: SandboxHost, marker: string): Promise<{ file: string; line: string }[]> {
  if (!/^[a-z0-9-]+$/.test(marker)) throw new Error(`bad marker ${marker}`);
  const dirs = "/run/kvmnet /etc/kvmnet /etc/systemd /etc/NetworkManager /etc/network /etc/sysctl.d /etc/udev /etc/dnsmasq.d";
  const r = await h.exec(`grep -rIn -F -- ${marker} ${dirs} 2>/dev/null; nft list ruleset 2>/dev/null | grep -n -F -- ${marker} | sed 's/^/nft-ruleset:/'; true`, {
    allowFail: true,
  });
  return r.stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const m = /^([^:]+):\d+:(.*)$/.exec(l);
      return m ? { file: m[1], line: m[2] } : { file: "?", line: l };
    });
}

const NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Put the host back to `baseline` (a snapshotHost) by hand: kill stray
 * processes by pid, delete links and nft tables it did not have, release
 * baseline links from bridges, flush their addresses, restore sysctls and
 * remove files under /run/kvmnet and /etc/kvmnet. Returns what is still
 * different afterwards (empty = clean).
 */
export async function scrub(h: SandboxHost, baseline: unknown, baselinePids: ReadonlySet<number>, snapshot: (h: SandboxHost) => Promise<unknown>): Promise<string[]> {
  for (const p of strayProcesses(h, baselinePids)) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      // gone already
    }
  }
  const now = (await snapshot(h)) as Snap;
  const base = baseline as Snap;
  const cmds: string[] = [];
  const bl = byName(base.links);
  for (const [n, l] of byName(now.links)) {
    if (!NAME.test(n)) continue;
    const was = bl.get(n);
    if (!was) {
      cmds.push(`ip link del dev ${n} 2>/dev/null`);
      continue;
    }
    if (was.master === undefined && l.master !== undefined) cmds.push(`ip link set dev ${n} nomaster`);
    if (was.mtu !== l.mtu) cmds.push(`ip link set dev ${n} mtu ${Number(was.mtu)}`);
    const up = (x: Obj) => Array.isArray(x.flags) && (x.flags as string[]).includes("UP");
    if (!up(was) && up(l)) cmds.push(`ip link set dev ${n} down`);
  }
  const ba = byName(base.addresses);
  for (const [n, a] of byName(now.addresses)) {
    const was = ba.get(n);
    if (was && NAME.test(n) && (was.addr_info as unknown[]).length === 0 && (a.addr_info as unknown[]).length > 0) cmds.push(`ip addr flush dev ${n}`);
  }
  const bt = nftTables(base.nftables);
  for (const k of nftTables(now.nftables).keys()) {
    const [fam, name] = k.split(" ");
    if (!bt.has(k) && /^[a-z0-9]+$/.test(fam ?? "") && /^[A-Za-z0-9_]+$/.test(name ?? "")) cmds.push(`nft delete table ${fam} ${name}`);
  }
  for (const [k, v] of Object.entries(base.sysctls)) {
    if (now.sysctls[k] !== v && /^[01]$/.test(v)) cmds.push(`echo ${v} > /proc/sys/${k.replace(/\./g, "/")}`);
  }
  const bf = new Set(base.files.map((f) => f.path));
  for (const f of now.files) if (!bf.has(f.path)) cmds.push(`rm -rf -- ${shq(f.path)}`);
  if (cmds.length > 0) await h.exec(cmds.join("\n"), { allowFail: true });
  return describeDiff(baseline, await snapshot(h));
}

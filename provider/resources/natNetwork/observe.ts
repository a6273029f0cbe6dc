/**
 * The kind's own observe section (KindSpec.observeExtra): every dnsmasq that
 * runs a NatNetwork's config, and who holds the DHCP/DNS ports.
 *
 * The pid file alone cannot tell: a dnsmasq that outlived its network (#14:
 * one that ignored SIGTERM, before delete waited for it) has no pid file and
 * no state left, yet keeps its sockets on the gateway address, and the next
 * network there fails with dnsmasq's "Address already in use".
 *
 * Lines (space-separated):
 *   proc <pid> <config file>     a live (not zombie) dnsmasq started with
 *                                --conf-file=/run/kvmnet/nat/<name>/dnsmasq.conf
 *   sock <local address> <users> a listening TCP/UDP socket on port 53 or 67, as
 *                                `ss -p` prints them (ss has no JSON output):
 *                                10.77.0.1:53 users:(("dnsmasq",pid=812,fd=6))
 */
import type { HostSnapshot } from "../../observe";
import { section } from "../../observe";
import { literal } from "../../shell";

export const NAT_DAEMONS_SECTION = "natDaemons";

export const natObserveSection = section(
  NAT_DAEMONS_SECTION,
  literal(
    [
      // grep -z: /proc/<pid>/cmdline is NUL-separated; ^…$ hold each argument.
      // Only this network namespace's processes (/proc lists every namespace's): a
      // same-named network's dnsmasq in another one (a container, another host on a
      // shared kernel) neither holds our ports nor is ours.
      "me=$(readlink /proc/self/ns/net)",
      "for f in $(grep -lzE '^--conf-file=/run/kvmnet/nat/[A-Za-z0-9_]+/dnsmasq[.]conf$' /proc/[0-9]*/cmdline 2>/dev/null); do",
      '  d=${f%/cmdline}; [ "$(cat "$d/comm" 2>/dev/null)" = dnsmasq ] || continue',
      '  [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$me" ] || continue',
      '  case "$(cut -d" " -f3 "$d/stat" 2>/dev/null)" in Z|"") continue ;; esac',
      "  printf 'proc %s %s\\n' \"${d#/proc/}\" \"$(tr '\\0' '\\n' < \"$f\" 2>/dev/null | sed -n 's/^--conf-file=//p' | head -n 1)\"",
      "done",
      "if command -v ss >/dev/null 2>&1; then ss -Hlntup '( sport = :53 or sport = :67 )' | awk '{print \"sock\", $5, $7}'; fi",
      "true",
    ].join("\n"),
  ),
);

export interface NatDaemon {
  pid: number;
  /** The config file it was started with. */
  conf: string;
  /** The NatNetwork whose run dir holds that config. */
  network: string;
}

export interface PortHolder {
  /** Local address as ss prints it: "10.77.0.1:53", "0.0.0.0%kvn-lab:67". */
  local: string;
  /** Processes holding the socket. */
  users: { comm: string; pid: number }[];
}

export interface NatDaemons {
  daemons: NatDaemon[];
  sockets: PortHolder[];
}

/** Parse the section; empty when it is absent (a snapshot taken without it). */
export function natDaemons(snap: HostSnapshot): NatDaemons {
  const out: NatDaemons = { daemons: [], sockets: [] };
  for (const line of (snap.sections.get(NAT_DAEMONS_SECTION)?.text ?? "").split("\n")) {
    const [what, a, b] = line.trim().split(" ");
    if (what === "proc" && a && /^\d+$/.test(a) && b) {
      const m = /^\/run\/kvmnet\/nat\/([A-Za-z0-9_]+)\/dnsmasq\.conf$/.exec(b);
      if (m) out.daemons.push({ pid: Number(a), conf: b, network: m[1] });
    } else if (what === "sock" && a) {
      const users = [...(b ?? "").matchAll(/\("([^"]*)",pid=(\d+)/g)].map((u) => ({ comm: u[1], pid: Number(u[2]) }));
      out.sockets.push({ local: a, users });
    }
  }
  return out;
}

/** Sockets bound to `address` on port 53 or 67 (`10.77.0.1:53`, or with an interface: `10.77.0.1%kvn-lab:53`). */
export function holdersOf(d: NatDaemons, address: string): PortHolder[] {
  return d.sockets.filter((s) => {
    const m = /^(.*?)(?:%[^:]*)?:(\d+)$/.exec(s.local);
    return m !== null && m[1] === address && (m[2] === "53" || m[2] === "67");
  });
}

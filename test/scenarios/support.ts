/** Judging a sandbox host as a whole, for scenario tests. */
import type { SandboxHost } from "../../testbed/fleet";

/**
 * The live processes in the host's network namespace other than the sandbox's
 * own sshd sessions, as sorted "comm args" lines. Zombies (the sandbox's pid 1
 * does not reap) are not processes any more and are left out.
 */
export async function hostProcesses(h: SandboxHost): Promise<string[]> {
  const r = await h.exec(
    `me=$(readlink /proc/self/ns/net); for d in /proc/[0-9]*; do ` +
      `[ "$(readlink $d/ns/net 2>/dev/null)" = "$me" ] || continue; ` +
      `s=$(cut -d' ' -f3 $d/stat 2>/dev/null) || continue; [ "$s" = Z ] && continue; ` +
      `c=$(cat $d/comm 2>/dev/null) || continue; [ "$c" = sshd ] && continue; ` +
      `echo "$c $(tr '\\0' ' ' < $d/cmdline 2>/dev/null)"; done`,
    { allowFail: true },
  );
  return r.stdout
    .split("\n")
    .filter((l) => l && !/^(sh|cut|cat|tr|ip|grep|ls) /.test(l))
    .sort();
}

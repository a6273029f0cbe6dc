/**
 * What a test does inside a guest or client namespace: get a DHCP lease the
 * way a VM's minimal DHCP client would, serve a port, talk to a port. Every
 * command runs through the namespace's own exec (nsenter / ip netns exec), so
 * traffic stays inside namespaces the test made.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import type { SandboxHost } from "./fleet";

type Exec = SandboxHost["exec"];

/** busybox udhcpc calls this with the lease in its environment ($mask is the prefix length). */
const UDHCPC_SCRIPT = [
  "#!/bin/sh",
  'case "$1" in',
  '  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface";',
  '    if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi ;;',
  "esac",
  "",
].join("\n");

let scriptPath: string | undefined;

/** The udhcpc hook script, written once per process into a temp dir (removed at exit). */
export function udhcpcScript(): string {
  if (scriptPath && fs.existsSync(scriptPath)) return scriptPath;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-guest-"));
  scriptPath = path.join(dir, "udhcpc.sh");
  fs.writeFileSync(scriptPath, UDHCPC_SCRIPT, { mode: 0o755 });
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  return scriptPath;
}

/** Run busybox udhcpc once on the guest's eth0; returns the IPv4 address it got ("" when none). */
export async function dhcpLease(exec: Exec): Promise<string> {
  await exec(`busybox udhcpc -i eth0 -n -q -f -t 8 -T 1 -s ${udhcpcScript()}`, { timeoutMs: 30_000 });
  const links = JSON.parse((await exec("ip -j -4 addr show dev eth0")).stdout) as { addr_info: { local: string }[] }[];
  return links[0]?.addr_info[0]?.local ?? "";
}

/** Background listeners started by `serve`: their namespace's exec and pid, to stop them by pid. */
export class Listeners {
  private readonly started: [Exec, number][] = [];

  /**
   * Serve a socat address (`TCP-LISTEN:443`, `UDP-RECVFROM:53`): every reply starts with
   * `peer=<client address>`, then echoes what the client sent.
   */
  async serve(exec: Exec, spec: string): Promise<void> {
    const r = await exec(`setsid socat ${spec},reuseaddr,fork SYSTEM:'echo peer=$SOCAT_PEERADDR; cat' </dev/null >/dev/null 2>&1 & echo $!`);
    this.started.push([exec, Number(r.stdout.trim())]);
    // socat binds after the shell returned: a client right away (on a loaded machine) was
    // refused by the guest itself. Wait (bounded) until the socket is there.
    const m = /^(TCP|UDP)[A-Z-]*:(\d+)$/.exec(spec);
    if (!m) throw new Error(`serve: cannot tell the port of ${spec}`);
    const flags = m[1] === "TCP" ? "-Hltn" : "-Hlun";
    await exec(`i=0; until [ -n "$(ss ${flags} 'sport = :${m[2]}')" ]; do [ $i -lt 100 ] || exit 1; sleep 0.1; i=$((i+1)); done`);
  }

  async stopAll(): Promise<void> {
    for (const [exec, pid] of this.started.splice(0)) await exec(`kill ${pid}`, { allowFail: true }).catch(() => undefined);
  }
}

/** Send `payload` from `exec`'s namespace; returns what came back ("" when refused or timed out). */
export async function talk(exec: Exec, proto: "tcp" | "udp", target: string, payload: string, bind?: string): Promise<string> {
  const addr = `${proto.toUpperCase()}:${target}${bind ? `,bind=${bind}` : ""}`;
  const r = await exec(`echo ${payload} | timeout 6 socat -T2 -t2 - ${addr}`, { allowFail: true });
  return r.stdout;
}

/**
 * One TCP connection held open across a change: `first()` sends a line and
 * returns what came back (peer line + echo); `second()` sends another line on
 * the SAME connection and returns its echo ("" when the connection died).
 * Bash's /dev/tcp keeps the socket in one background process per session.
 */
export async function heldConnection(exec: Exec, host: string, port: number): Promise<{ first(): Promise<string>; second(): Promise<string>; close(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-held-"));
  const script = path.join(dir, "session.sh");
  fs.writeFileSync(
    script,
    [
      "#!/bin/bash",
      `cd ${dir}`,
      `exec 3<>/dev/tcp/${host}/${port} || { echo refused > out1; exit 1; }`,
      "echo before >&3",
      '{ read -r -t 5 a <&3; read -r -t 5 b <&3; echo "$a"; echo "$b"; } > out1.tmp; mv out1.tmp out1',
      "i=0; while [ ! -f go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done",
      "echo after >&3",
      '{ read -r -t 5 c <&3; echo "$c"; } > out2.tmp; mv out2.tmp out2',
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
  const r = await exec(`setsid bash ${script} </dev/null >/dev/null 2>&1 & echo $!`);
  const pid = Number(r.stdout.trim());
  const waitFor = async (file: string) => {
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, file)); i++) await new Promise((res) => setTimeout(res, 100));
    return fs.existsSync(path.join(dir, file)) ? fs.readFileSync(path.join(dir, file), "utf8") : "";
  };
  return {
    first: () => waitFor("out1"),
    async second() {
      fs.writeFileSync(path.join(dir, "go"), "");
      return waitFor("out2");
    },
    async close() {
      await exec(`kill ${pid}`, { allowFail: true }).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

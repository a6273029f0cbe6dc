/**
 * SSH transport on ssh2, and the per-process connection pool.
 *
 * Invariants:
 * - One SSH connection per (user, host, port, credentials, jump chain) per
 *   process. The pool lives in this module, which the dynamic-provider process
 *   `require`s from node_modules, so every resource of a deployment shares it;
 *   nothing here is ever captured by a serialized provider closure.
 * - At most {@link MAX_CHANNELS} exec channels at once per connection (OpenSSH
 *   MaxSessions defaults to 10); further work waits in a FIFO queue.
 * - The pool never keeps the process alive: sockets are unref'd while no
 *   command runs, and idle connections close themselves after IDLE_CLOSE_MS.
 * - A connection that dropped is re-dialed once, but a command is re-sent only
 *   if it provably never started (the exec request was not accepted).
 */
import { createHash } from "crypto";
import { Client, ClientChannel, ConnectConfig } from "ssh2";
import type { Duplex } from "stream";
import { isKvmnetError, KvmnetError, redact } from "../errors";
import { shq, wholeScript, withStdin } from "../shell";
import { connectionSecrets, describeConnection, ResolvedConnection } from "./connection";
import { readRegularFile } from "./files";
import { fingerprint, judgeKnownHosts, keyType, knownHostsName, matchesPin, readKnownHosts } from "./hostKeys";
import { frameForSudoPassword } from "./sudo";
import { DEFAULT_TIMEOUT_MS, Host, MAX_OUTPUT_BYTES, outputLimitMessage, RunOptions, RunResult } from "./types";

export const MAX_CHANNELS = 8;
const IDLE_CLOSE_MS = 30_000;
const CHANNEL_RETRIES = 6;
/** Bound on an identity file (keys are a few KiB). */
const MAX_IDENTITY_FILE_BYTES = 1024 * 1024;

/** Counters the tests and benchmarks read; `sharedReads`: runs a caller got by joining another caller's shared run. */
export const poolStats = { handshakes: 0, channelRetries: 0, redials: 0, commands: 0, sharedReads: 0 };

const pool = new Map<string, SshConnection>();

function poolKey(c: ResolvedConnection): string {
  const secrets = createHash("sha256")
    .update(JSON.stringify([c.privateKey, c.identityFile?.path, c.password, c.agent, c.hostKey, c.knownHostsFile, c.insecureIgnoreHostKey, c.sudo]))
    .digest("hex")
    .slice(0, 16);
  return `${c.user}@${c.hostname}:${c.port}#${secrets}${c.jumpHost ? ` via ${poolKey(c.jumpHost)}` : ""}`;
}

/** The pooled connection for `c` (created lazily; dialed on first use). */
export function sshConnectionFor(c: ResolvedConnection): SshConnection {
  const key = poolKey(c);
  let conn = pool.get(key);
  if (!conn) {
    conn = new SshConnection(c);
    pool.set(key, conn);
  }
  return conn;
}

/** Close every pooled connection (tests; process shutdown). */
export function closeAllConnections(): void {
  for (const c of pool.values()) c.close();
  pool.clear();
}

class SshConnection {
  private client?: Client;
  private connecting?: Promise<Client>;
  private active = 0;
  /**
   * Channels allowed at once. Starts at MAX_CHANNELS and drops to what the
   * server really allows when it refuses a channel (a MaxSessions below ours),
   * so excess work waits in the queue instead of retrying in a loop.
   */
  private limit = MAX_CHANNELS;
  private open = 0;
  private holds = 0;
  private readonly waiters: (() => void)[] = [];
  /** Shared runs (RunOptions.shared) by script and options: the one under way, and the one later askers join. */
  private readonly shared = new Map<string, { running?: Promise<void>; waiting?: Promise<RunResult> }>();
  private idleTimer?: NodeJS.Timeout;
  private sock?: Duplex & { ref?: () => void; unref?: () => void };
  readonly label: string;
  private readonly secrets: string[];

  constructor(private readonly conn: ResolvedConnection) {
    this.label = describeConnection(conn);
    this.secrets = connectionSecrets(conn);
  }

  /**
   * Run a script: queue for a channel slot, connect if needed, exec.
   *
   * Shared runs (RunOptions.shared), per script: at most one runs and one
   * waits. The waiting one starts when the running one is done (or at once
   * when none runs), and until its exec request goes out every later ask for
   * the same script joins it. So reads that a host's resources ask for while
   * one is under way become one read right after it, never one that started
   * before they asked.
   */
  run(script: string, opts: RunOptions = {}): Promise<RunResult> {
    if (!opts.shared) return this.runOwn(script, opts);
    const key = JSON.stringify([opts.stdin, opts.timeoutMs, opts.maxOutputBytes, script]);
    let entry = this.shared.get(key);
    if (entry?.waiting) {
      poolStats.sharedReads++;
      return entry.waiting;
    }
    if (!entry) this.shared.set(key, (entry = {}));
    const e = entry;
    const run: Promise<RunResult> = (e.running ?? Promise.resolve()).then(() =>
      this.runOwn(script, opts, () => {
        if (e.waiting === run) e.waiting = undefined;
        e.running = done;
      }),
    );
    const done: Promise<void> = run.then(
      () => undefined,
      () => undefined,
    );
    void done.then(() => {
      if (e.waiting === run) e.waiting = undefined;
      if (e.running === done) e.running = undefined;
      if (!e.waiting && !e.running && this.shared.get(key) === e) this.shared.delete(key);
    });
    e.waiting = run;
    return run;
  }

  /** `starting` is called right before each exec request goes out. */
  private async runOwn(script: string, opts: RunOptions, starting?: () => void): Promise<RunResult> {
    poolStats.commands++;
    await this.acquire();
    try {
      return await this.runWithRetries(script, opts, starting);
    } finally {
      this.release();
    }
  }

  private async runWithRetries(script: string, opts: RunOptions, starting?: () => void): Promise<RunResult> {
    let redialed = false;
    for (let attempt = 0; ; attempt++) {
      const client = await this.connect();
      const framed = this.frame(script, opts);
      let channel: ClientChannel;
      starting?.();
      try {
        channel = await this.openExec(client, framed.command);
      } catch (e) {
        const err = e as Error & { reason?: unknown };
        if (/Channel open failure/.test(err.message) && attempt < CHANNEL_RETRIES) {
          // sshd refused a session: its MaxSessions is below our limit. Learn
          // it, give back our slot and queue again behind running commands.
          poolStats.channelRetries++;
          this.limit = Math.max(1, this.open);
          this.release();
          await sleep(20 * 2 ** attempt);
          await this.acquire();
          continue;
        }
        if (/Not connected|No response from server|ECONNRESET|EPIPE|closed/.test(err.message) && !redialed) {
          // The connection died between uses: the command never started, so
          // re-dial once and send it again.
          redialed = true;
          poolStats.redials++;
          this.drop();
          continue;
        }
        throw new KvmnetError({
          kind: "Unreachable",
          message: `cannot open an SSH channel: ${redact(err.message, this.secrets)}`,
          host: this.label,
          cause: err,
        });
      }
      return await this.collect(channel, framed.stdin, opts);
    }
  }

  /**
   * Open an exec channel. A server that never answers the open (wedged, or
   * frozen) would hold the caller forever, so the wait is bounded by
   * readyTimeoutMs like every other network wait; a channel that arrives after
   * that is closed at once.
   */
  private openExec(client: Client, command: string): Promise<ClientChannel> {
    const timeoutMs = this.conn.readyTimeoutMs;
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(new Error(`no answer to a channel open within ${timeoutMs} ms (readyTimeoutMs)`));
      }, timeoutMs);
      try {
        client.exec(command, (err, ch) => {
          clearTimeout(timer);
          if (settled) {
            ch?.close();
            return;
          }
          settled = true;
          if (err) return reject(err);
          this.open++;
          ch.once("close", () => this.open--);
          resolve(ch);
        });
      } catch (e) {
        clearTimeout(timer);
        settled = true;
        reject(e);
      }
    });
  }

  /**
   * The command sent in the exec request, and the standard input for it. The
   * script itself always travels on standard input (no argument-length limits,
   * no login-shell quoting quirks).
   */
  private frame(script: string, opts: RunOptions): { command: string; stdin: string } {
    const body = wholeScript(opts.stdin !== undefined ? withStdin(script, opts.stdin) : script);
    const c = this.conn;
    const plain = body.endsWith("\n") ? body : body + "\n";
    if (!c.sudo || c.user === "root") return { command: "sh -s", stdin: plain };
    // sudo resets the environment; carry SSH_CONNECTION (observe uses it to
    // find the management interface) through as an argument of env.
    const env = 'env KVMNET_SSH_CONNECTION="$SSH_CONNECTION"';
    if (c.sudo.password === undefined) return { command: `sudo -n -- ${env} sh -s`, stdin: plain };
    // `-k` makes sudo ask even when a timestamp is cached; see ./sudo.ts for
    // why the password can never be run as part of the script.
    const f = frameForSudoPassword(c.sudo.password, body);
    return { command: `sudo -S -k -p '' -- ${env} ${f.args.map(shq).join(" ")}`, stdin: f.stdin };
  }

  private collect(ch: ClientChannel, stdin: string, opts: RunOptions): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const limit = opts.maxOutputBytes ?? MAX_OUTPUT_BYTES;
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const bytes = { stdout: 0, stderr: 0 };
      let exitCode: number | null | undefined;
      let signal: string | null = null;
      let settled = false;
      const stderrText = () => redact(Buffer.concat(err).toString("utf8"), this.secrets);
      /** Stop the remote command: sshd closes its pipes and hangs it up when the channel closes. */
      const stop = (e: KvmnetError) => {
        settled = true;
        clearTimeout(timer);
        try {
          ch.signal("KILL");
        } catch {
          /* the server may not support signals; closing is enough */
        }
        ch.close();
        reject(e);
      };
      const timer = setTimeout(() => {
        if (settled) return;
        stop(
          new KvmnetError({
            kind: "Timeout",
            message: `command did not finish within ${timeoutMs} ms`,
            host: this.label,
            stderr: stderrText(),
            hint: "the host may be overloaded or a lock is held; the command may still complete on the host — run `pulumi refresh` before retrying",
          }),
        );
      }, timeoutMs);
      const capture = (stream: "stdout" | "stderr", into: Buffer[]) => (d: Buffer) => {
        if (settled) return;
        bytes[stream] += d.length;
        if (bytes[stream] <= limit) {
          into.push(d);
          return;
        }
        stop(new KvmnetError({ kind: "Failed", message: outputLimitMessage(stream, limit), host: this.label, stderr: stderrText() }));
      };
      ch.on("data", capture("stdout", out));
      ch.stderr.on("data", capture("stderr", err));
      ch.on("exit", (code: number | null, sig?: string) => {
        exitCode = code;
        signal = sig ?? null;
      });
      ch.on("close", () => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        const stderr = stderrText();
        if (exitCode === undefined) {
          reject(
            new KvmnetError({
              kind: "Unreachable",
              message: "SSH connection lost while a command ran; it may or may not have completed",
              host: this.label,
              stderr,
              hint: "run `pulumi refresh` to see what the host has, then `pulumi up` again",
            }),
          );
          return;
        }
        resolve({ stdout: Buffer.concat(out).toString("utf8"), stderr, exitCode, signal });
      });
      ch.end(stdin);
    });
  }

  private async acquire(): Promise<void> {
    while (this.active >= this.limit) await new Promise<void>((r) => this.waiters.push(r));
    this.active++;
    this.hold();
  }

  private release(): void {
    this.active--;
    this.unhold();
    const next = this.waiters.shift();
    if (next) next();
  }

  /** Keep the socket (and the jump host's) referenced while work is under way. */
  hold(): void {
    if (this.holds++ === 0) {
      if (this.idleTimer) clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
      this.sock?.ref?.();
      if (this.conn.jumpHost) sshConnectionFor(this.conn.jumpHost).hold();
    }
  }

  unhold(): void {
    if (--this.holds === 0) {
      this.sock?.unref?.();
      if (this.conn.jumpHost) sshConnectionFor(this.conn.jumpHost).unhold();
      this.idleTimer = setTimeout(() => this.close(), IDLE_CLOSE_MS);
      this.idleTimer.unref();
    }
  }

  private connect(): Promise<Client> {
    if (this.client) return Promise.resolve(this.client);
    if (!this.connecting) {
      this.connecting = this.dial().then(
        (c) => {
          this.client = c;
          this.connecting = undefined;
          return c;
        },
        (e) => {
          this.connecting = undefined;
          throw e;
        },
      );
    }
    return this.connecting;
  }

  private async dial(): Promise<Client> {
    const c = this.conn;
    // Files are read before anything goes on the wire, asynchronously and
    // bounded (./files.ts): ssh2 calls hostVerifier synchronously, and a sync
    // read of a FIFO there froze the event loop (issue #14, item 10).
    let knownHosts: string | undefined;
    let privateKey = c.privateKey;
    try {
      if (!c.insecureIgnoreHostKey && !c.hostKey) knownHosts = await readKnownHosts(c.knownHostsFile);
      if (!privateKey && c.identityFile) privateKey = await this.readIdentityFile(c.identityFile);
    } catch (e) {
      if (!isKvmnetError(e)) throw e;
      throw new KvmnetError({ kind: e.kind, message: e.shortMessage, hint: e.hint, host: this.label, cause: e.cause });
    }
    let sock: Duplex | undefined;
    if (c.jumpHost) {
      const jump = sshConnectionFor(c.jumpHost);
      sock = await jump.forwardOut(c.hostname, c.port, c.readyTimeoutMs);
    }
    const client = new Client();
    let offered: Buffer | undefined;
    let verdict: string | undefined;
    const cfg: ConnectConfig = {
      host: c.hostname,
      port: c.port,
      username: c.user,
      readyTimeout: c.readyTimeoutMs,
      sock,
      hostVerifier: (key: Buffer) => {
        offered = key;
        verdict = this.verifyHostKey(key, knownHosts);
        return verdict === "ok";
      },
    };
    if (privateKey) cfg.privateKey = privateKey;
    if (c.privateKeyPassphrase) cfg.passphrase = c.privateKeyPassphrase;
    if (c.password) cfg.password = c.password;
    if (c.agent) cfg.agent = c.agent;
    try {
      await new Promise<void>((resolve, reject) => {
        client.once("ready", () => resolve());
        // `on`, not `once`: a handshake that times out can emit a second error
        // ("Connection lost before handshake") as the socket closes.
        client.on("error", reject);
        // A connection lost after the server's version line but before
        // authentication ends emits no "error", only "end" and "close", and ssh2
        // clears its ready timeout: without this the dial never settled.
        client.once("close", () => reject(new Error("connection closed during the SSH handshake (before authentication finished)")));
        client.connect(cfg);
      });
    } catch (e) {
      client.removeAllListeners("error");
      client.on("error", () => undefined);
      client.end();
      throw this.dialError(e as Error, offered, verdict);
    }
    poolStats.handshakes++;
    client.removeAllListeners("error");
    client.on("error", () => this.drop());
    client.on("close", () => this.drop(client));
    const raw = (client as unknown as { _sock?: Duplex & { setKeepAlive?: (on: boolean, ms: number) => void } })._sock;
    // TCP keepalive detects a dead peer without ssh2's keepalive interval,
    // which is a referenced timer and would keep the process alive.
    raw?.setKeepAlive?.(true, 15_000);
    this.sock = raw;
    if (this.holds === 0) this.sock?.unref?.();
    return client;
  }

  /** "ok", or why the key was refused (`knownHosts`: the file's text, read before dialing). */
  private verifyHostKey(key: Buffer, knownHosts: string | undefined): string {
    const c = this.conn;
    if (c.insecureIgnoreHostKey) return "ok";
    if (c.hostKey) return matchesPin(c.hostKey, key) ? "ok" : "pin-mismatch";
    const names = [...new Set([c.hostname, c.label])].map((n) => knownHostsName(n, c.port));
    const v = judgeKnownHosts(knownHosts ?? "", names, key);
    return v === "match" ? "ok" : `known-hosts-${v}`;
  }

  /** The key text of the ssh config's IdentityFile; it becomes a secret to redact. */
  private async readIdentityFile(f: { path: string; from: string }): Promise<string | undefined> {
    const text = await readRegularFile(f.path, `IdentityFile ${f.path} (from ${f.from})`, MAX_IDENTITY_FILE_BYTES);
    if (text !== undefined && !this.secrets.includes(text)) this.secrets.push(text);
    return text;
  }

  private dialError(e: Error, offered: Buffer | undefined, verdict: string | undefined): KvmnetError {
    const c = this.conn;
    const msg = redact(e.message, this.secrets);
    if (offered && verdict && verdict !== "ok") {
      const fp = fingerprint(offered);
      const type = keyType(offered);
      const pinHint = `connection.hostKey = "${fp}"`;
      const scan = `ssh-keyscan -p ${c.port} ${c.hostname} >> ${c.knownHostsFile}`;
      const check = "compare it first with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` run on the host's console";
      switch (verdict) {
        case "pin-mismatch":
          return new KvmnetError({
            kind: "Unreachable",
            message: `host key mismatch: the host offered ${type} ${fp}, which does not match connection.hostKey ${c.hostKey}`,
            host: this.label,
            hint: "someone may be intercepting the connection, or the host was reinstalled; if the new key is right, pin it with " + pinHint,
          });
        case "known-hosts-mismatch":
          return new KvmnetError({
            kind: "Unreachable",
            message: `host key mismatch: the host offered ${type} ${fp}, which differs from the key recorded in ${c.knownHostsFile}`,
            host: this.label,
            hint: `someone may be intercepting the connection, or the host was reinstalled; if the new key is right, remove the old line (ssh-keygen -R ${c.hostname}) and pin ${pinHint}`,
          });
        case "known-hosts-revoked":
          return new KvmnetError({ kind: "Unreachable", message: `host key ${fp} is marked @revoked in ${c.knownHostsFile}`, host: this.label });
        case "known-hosts-unknown":
          return new KvmnetError({
            kind: "Unreachable",
            message: `host key of ${c.hostname}:${c.port} is not known: the host offered ${type} ${fp}`,
            host: this.label,
            hint: `if this is the right host, pin it with ${pinHint}, or add it to known_hosts: ${scan} (${check}); connection.insecureIgnoreHostKey = true skips the check (not recommended)`,
          });
        default:
          return new KvmnetError({ kind: "Unreachable", message: `host key could not be checked: ${verdict}`, host: this.label });
      }
    }
    if (/authentication methods failed/i.test(msg)) {
      return new KvmnetError({
        kind: "Unreachable",
        message: `SSH authentication failed for user ${c.user}`,
        host: this.label,
        hint: "check connection.privateKey / password / agent and that the key is in the user's authorized_keys",
        cause: e,
      });
    }
    if (/connection closed during the SSH handshake/.test(msg)) {
      return new KvmnetError({
        kind: "Unreachable",
        message: `cannot connect: ${msg}`,
        host: this.label,
        hint: "sshd or the network ended the connection mid-handshake (sshd restarted or killed, MaxStartups reached, a firewall cutting the flow); nothing ran on the host, so retrying is safe",
        cause: e,
      });
    }
    if (/Timed out while waiting for handshake/i.test(msg)) {
      return new KvmnetError({ kind: "Timeout", message: `no SSH handshake within ${c.readyTimeoutMs} ms`, host: this.label, cause: e });
    }
    if (/passphrase|Cannot parse privateKey|Unsupported key format|Encrypted private/i.test(msg)) {
      return new KvmnetError({
        kind: "InvalidArgument",
        message: `connection.privateKey cannot be used: ${msg}`,
        host: this.label,
        hint: "give the key in OpenSSH or PEM format, with privateKeyPassphrase if it is encrypted",
      });
    }
    return new KvmnetError({ kind: "Unreachable", message: `cannot connect: ${msg}`, host: this.label, cause: e });
  }

  /**
   * A TCP stream to host:port through this connection (for the next jump hop),
   * or an Unreachable error after `timeoutMs`. The jump's sshd answers the
   * channel open only once its own connect() to the target ends, which for a
   * target that drops packets is the kernel's SYN retry budget (~130 s; issue #14,
   * item 9), so the wait is bounded by the hop's readyTimeoutMs here.
   */
  async forwardOut(host: string, port: number, timeoutMs: number): Promise<Duplex> {
    const client = await this.connect();
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(
          new KvmnetError({
            kind: "Unreachable",
            message: `jump host cannot reach ${host}:${port}: no answer within ${timeoutMs} ms (readyTimeoutMs)`,
            host: this.label,
            hint: `check that ${host}:${port} is reachable from the jump host (a firewall dropping packets looks like this)`,
          }),
        );
      }, timeoutMs);
      client.forwardOut("127.0.0.1", 0, host, port, (err, stream) => {
        clearTimeout(timer);
        if (settled) {
          // Answered after we gave up: close the channel rather than leak it.
          stream?.close();
          return;
        }
        settled = true;
        if (err) {
          reject(
            new KvmnetError({
              kind: "Unreachable",
              message: `jump host cannot reach ${host}:${port}: ${err.message}`,
              host: this.label,
              hint: "the jump host's sshd must allow TCP forwarding (AllowTcpForwarding yes)",
            }),
          );
        } else resolve(stream);
      });
    });
  }

  private drop(which?: Client): void {
    if (which && which !== this.client) return;
    const c = this.client;
    this.client = undefined;
    this.sock = undefined;
    c?.end();
  }

  close(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.drop();
  }
}

export type { SshConnection };

/** A Host over a pooled SSH connection. */
export class SshHost implements Host {
  private readonly conn: SshConnection;
  readonly label: string;
  constructor(c: ResolvedConnection) {
    this.conn = sshConnectionFor(c);
    this.label = this.conn.label;
  }
  run(script: string, opts?: RunOptions): Promise<RunResult> {
    return this.conn.run(script, opts);
  }
}

/**
 * A Host on an SSH connection of its own, outside the pool: commit-confirm
 * must prove that a NEW session reaches the host after a change, not that the
 * session which made the change survived it. Close it when done.
 */
export class DedicatedSshHost implements Host {
  private readonly conn: SshConnection;
  readonly label: string;
  constructor(c: ResolvedConnection) {
    this.conn = new SshConnection(c);
    this.label = this.conn.label;
  }
  run(script: string, opts?: RunOptions): Promise<RunResult> {
    return this.conn.run(script, opts);
  }
  close(): void {
    this.conn.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

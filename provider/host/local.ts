/**
 * Local transport: runs scripts with /bin/sh on the machine running pulumi
 * (`connection: { local: true }`), for programs that run on the KVM host itself.
 */
import execa from "execa";
import { KvmnetError } from "../errors";
import { wholeScript, withStdin } from "../shell";
import { frameForSudoPassword } from "./sudo";
import { DEFAULT_TIMEOUT_MS, Host, MAX_OUTPUT_BYTES, outputLimitMessage, RunOptions, RunResult } from "./types";

export class LocalHost implements Host {
  readonly label = "local";
  constructor(private readonly sudo: false | { password?: string }) {}

  async run(script: string, opts: RunOptions = {}): Promise<RunResult> {
    const body = wholeScript(opts.stdin !== undefined ? withStdin(script, opts.stdin) : script);
    const asRoot = process.getuid?.() === 0;
    let file = "sh";
    let args = ["-s"];
    let input = body;
    if (this.sudo && !asRoot) {
      file = "sudo";
      if (this.sudo.password !== undefined) {
        // See ./sudo.ts: the password can never be run as part of the script.
        const f = frameForSudoPassword(this.sudo.password, body);
        args = ["-S", "-k", "-p", "", "--", ...f.args];
        input = f.stdin;
      } else {
        args = ["-n", "--", "sh", "-s"];
      }
    }
    const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const limit = opts.maxOutputBytes ?? MAX_OUTPUT_BYTES;
    // Capture ourselves (buffer: false): execa's own maxBuffer resolves with
    // silently truncated output under reject: false.
    const child = execa(file, args, { input, reject: false, timeout, buffer: false, stripFinalNewline: false });
    const captured = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const bytes = { stdout: 0, stderr: 0 };
    let overflowed: "stdout" | "stderr" | undefined;
    const capture = (stream: "stdout" | "stderr") => (d: Buffer) => {
      if (overflowed) return;
      bytes[stream] += d.length;
      if (bytes[stream] <= limit) {
        captured[stream].push(d);
        return;
      }
      overflowed = stream;
      // Closing our ends of the pipes ends any writer (SIGPIPE), including the
      // children of a sudo we may not be allowed to signal.
      child.kill("SIGKILL");
      child.stdout?.destroy();
      child.stderr?.destroy();
    };
    child.stdout?.on("data", capture("stdout"));
    child.stderr?.on("data", capture("stderr"));
    const r = await child;
    const stdout = Buffer.concat(captured.stdout).toString("utf8");
    const stderr = Buffer.concat(captured.stderr).toString("utf8");
    if (overflowed) {
      throw new KvmnetError({ kind: "Failed", message: outputLimitMessage(overflowed, limit), host: this.label, stderr });
    }
    if (r.timedOut) {
      throw new KvmnetError({ kind: "Timeout", message: `command did not finish within ${timeout} ms`, host: this.label, stderr });
    }
    return { stdout, stderr, exitCode: r.signal ? null : r.exitCode, signal: r.signal ?? null };
  }
}

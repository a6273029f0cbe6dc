/**
 * Local transport: runs scripts with /bin/sh on the machine running pulumi
 * (`connection: { local: true }`), for programs that run on the KVM host itself.
 */
import execa from "execa";
import { KvmnetError } from "../errors";
import { withStdin } from "../shell";
import { frameForSudoPassword } from "./sudo";
import { DEFAULT_TIMEOUT_MS, Host, RunOptions, RunResult } from "./types";

export class LocalHost implements Host {
  readonly label = "local";
  constructor(private readonly sudo: false | { password?: string }) {}

  async run(script: string, opts: RunOptions = {}): Promise<RunResult> {
    const body = opts.stdin !== undefined ? withStdin(script, opts.stdin) : script;
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
    const r = await execa(file, args, { input, reject: false, timeout, stripFinalNewline: false });
    if (r.timedOut) {
      throw new KvmnetError({ kind: "Timeout", message: `command did not finish within ${timeout} ms`, host: this.label, stderr: r.stderr });
    }
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.signal ? null : r.exitCode, signal: r.signal ?? null };
  }
}

/**
 * Local transport: runs scripts with /bin/sh on the machine running pulumi
 * (`connection: { local: true }`), for programs that run on the KVM host itself.
 */
import execa from "execa";
import { KvmnetError } from "../errors";
import { withStdin } from "../shell";
import { DEFAULT_TIMEOUT_MS, Host, RunOptions, RunResult } from "./types";

export class LocalHost implements Host {
  readonly label = "local";
  constructor(private readonly sudo: false | { password?: string }) {}

  async run(script: string, opts: RunOptions = {}): Promise<RunResult> {
    const body = opts.stdin !== undefined ? withStdin(script, opts.stdin) : script;
    const asRoot = process.getuid?.() === 0;
    const [file, args, input] =
      this.sudo && !asRoot
        ? this.sudo.password !== undefined
          ? ["sudo", ["-S", "-k", "-p", "", "--", "sh", "-c", 'while IFS= read -r l; do [ "$l" = "@@kvmnet-script" ] && break; done; exec sh -s'], `${this.sudo.password}\n@@kvmnet-script\n${body}\n`]
          : ["sudo", ["-n", "--", "sh", "-s"], body]
        : ["sh", ["-s"], body];
    const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const r = await execa(file as string, args as string[], { input: input as string, reject: false, timeout, stripFinalNewline: false });
    if (r.timedOut) {
      throw new KvmnetError({ kind: "Timeout", message: `command did not finish within ${timeout} ms`, host: this.label, stderr: r.stderr });
    }
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.signal ? null : r.exitCode, signal: r.signal ?? null };
  }
}

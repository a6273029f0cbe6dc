/**
 * Drives the real Pulumi CLI (built by scripts/install-pulumi.sh) with a local
 * file backend, a private PULUMI_HOME and stack config kept outside the repo
 * (--config-file), against sandbox hosts.
 */
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export const REPO = path.resolve(__dirname, "..");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

let pulumiBin: string | undefined;

/**
 * The directory holding `pulumi`, building it when needed. Throws (so the
 * tier fails, never skips) when it cannot be had.
 */
export async function ensurePulumi(): Promise<string> {
  if (pulumiBin) return pulumiBin;
  const script = path.join(REPO, "scripts", "install-pulumi.sh");
  const r = await run("bash", [script], { cwd: REPO, timeoutMs: 30 * 60_000 });
  const bin = r.stdout.trim().split("\n").pop() ?? "";
  if (r.code !== 0 || !fs.existsSync(path.join(bin, "pulumi"))) {
    throw new Error(`the Pulumi CLI is not available and could not be built (exit ${r.code}):\n${r.stderr.slice(-3000)}`);
  }
  pulumiBin = bin;
  return bin;
}

export function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err && typeof (err as { code?: unknown }).code !== "number" ? `\n${err.message}` : "") });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** What `pulumi stack export` prints, as far as the tests read it. */
export interface StackExport {
  deployment: { resources?: { type: string; id?: string; outputs?: Record<string, unknown> }[] };
}

/** One stack of one project directory, with everything it writes under a temp dir. */
export class Stack {
  readonly work: string;
  readonly env: NodeJS.ProcessEnv;
  private readonly configFile: string;

  constructor(
    readonly projectDir: string,
    readonly name: string,
    bin: string,
  ) {
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-engine-"));
    fs.mkdirSync(path.join(this.work, "backend"));
    this.configFile = path.join(this.work, `Pulumi.${name}.yaml`);
    this.env = {
      ...process.env,
      PATH: `${bin}:${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`,
      PULUMI_HOME: path.join(this.work, "home"),
      PULUMI_BACKEND_URL: `file://${path.join(this.work, "backend")}`,
      PULUMI_CONFIG_PASSPHRASE: "kvmnet-engine-tests",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      NO_COLOR: "1",
    };
  }

  /** The full `pulumi` argument list for `args` on this stack (its name, non-interactive, its config file). */
  cliArgs(args: string[]): string[] {
    const stackArgs = ["--stack", this.name, "--non-interactive", "--color", "never"];
    const configArgs = ["--config-file", this.configFile];
    const [cmd, ...rest] = args;
    const withConfig = ["up", "preview", "refresh", "destroy", "config"].includes(cmd);
    return [cmd, ...rest, ...stackArgs, ...(withConfig ? configArgs : [])];
  }

  /** `pulumi <args>` in the project dir, for this stack. */
  pulumi(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
    return run("pulumi", this.cliArgs(args), {
      cwd: this.projectDir,
      env: this.env,
      input: opts.input,
      timeoutMs: opts.timeoutMs,
    });
  }

  /** Like pulumi(), but throws with the CLI's output unless it exits 0. */
  async ok(args: string[], opts: { input?: string } = {}): Promise<CliResult> {
    const r = await this.pulumi(args, opts);
    if (r.code !== 0) throw new Error(`pulumi ${args.join(" ")} exited ${r.code}\n--- stdout\n${r.stdout.slice(-6000)}\n--- stderr\n${r.stderr.slice(-4000)}`);
    return r;
  }

  async init(): Promise<void> {
    await this.ok(["stack", "init"]);
  }

  /**
   * Point the examples' `host`, `hostKey` and secret `sshKey` config (and `port`,
   * for a lab host behind a forwarded loopback port) at a test host.
   */
  async connectTo(h: { address: string; hostKeyFingerprint: string; privateKey: string; port?: number }): Promise<void> {
    await this.setConfig("host", h.address);
    if (h.port !== undefined && h.port !== 22) await this.setConfig("port", String(h.port));
    await this.setConfig("hostKey", h.hostKeyFingerprint);
    await this.setConfig("sshKey", h.privateKey, { secret: true });
  }

  async setConfig(key: string, value: string, opts: { secret?: boolean; path?: boolean } = {}): Promise<void> {
    const args = ["config", "set", ...(opts.path ? ["--path"] : []), ...(opts.secret ? ["--secret"] : []), key];
    // Values go on stdin so keys and secrets never appear in a process listing.
    await this.ok(args, { input: value });
  }

  /** Steps of `pulumi preview --json` with the input keys each step changes. */
  async previewSteps(): Promise<{ op: string; type: string; name: string; changedInputs: string[] }[]> {
    const r = await this.ok(["preview", "--json"]);
    const doc = JSON.parse(r.stdout) as {
      steps: { op: string; urn: string; oldState?: { inputs?: Record<string, unknown> }; newState?: { inputs?: Record<string, unknown>; type?: string } }[];
    };
    return doc.steps.map((s) => {
      const olds = s.oldState?.inputs ?? {};
      const news = s.newState?.inputs ?? {};
      const keys = [...new Set([...Object.keys(olds), ...Object.keys(news)])].filter((k) => !k.startsWith("__"));
      const changedInputs = keys.filter((k) => JSON.stringify(olds[k]) !== JSON.stringify(news[k])).sort();
      const urnParts = s.urn.split("::");
      return { op: s.op, type: urnParts[2], name: urnParts[3], changedInputs };
    });
  }

  /**
   * P7: export the state (secrets encrypted), then `stack import` it back.
   * Returns the encrypted export and the decrypted state before and after, for
   * the test to compare.
   */
  async exportImport(): Promise<{
    exported: Awaited<ReturnType<Stack["exportState"]>>;
    plainBefore: Awaited<ReturnType<Stack["exportState"]>>;
    reimported: Awaited<ReturnType<Stack["exportState"]>>;
  }> {
    const exported = await this.exportState();
    const plainBefore = await this.exportState(true);
    const file = path.join(this.work, "export.json");
    fs.writeFileSync(file, exported.text);
    await this.ok(["stack", "import", "--file", file]);
    return { exported, plainBefore, reimported: await this.exportState(true) };
  }

  /** `pulumi stack export`; with showSecrets the secrets are decrypted (ciphertexts differ on every encryption). */
  async exportState(showSecrets = false): Promise<{ text: string; doc: StackExport }> {
    const r = await this.ok(["stack", "export", ...(showSecrets ? ["--show-secrets"] : [])]);
    return { text: r.stdout, doc: JSON.parse(r.stdout) as StackExport };
  }

  async dispose(): Promise<void> {
    await this.pulumi(["stack", "rm", "--yes", "--force"]);
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

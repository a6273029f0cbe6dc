/**
 * The `connection` input every resource takes: its schema, and its resolution
 * against ~/.ssh/config into the concrete parameters the SSH transport dials.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { z } from "zod";
import SSHConfig from "ssh-config";
import { hostName, localPath, SECRET_FIELDS } from "../validate";
import { KvmnetError } from "../errors";
import { hostOf } from "../identity";
import { readRegularFileSync } from "./files";

const userName = z
  .string()
  .min(1)
  .max(32, "must be at most 32 characters")
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, "must be a POSIX user name (letters, digits, '_', '.', '-')");

const hostKey = z
  .string()
  .refine(
    (s) => /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(s) || /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?$/.test(s),
    "must be an OpenSSH fingerprint (SHA256:…, as `ssh-keygen -lf` prints) or a public key line (ssh-ed25519 AAAA…)",
  );

const secretString = z.string().refine((s) => !s.includes("\0"), "must not contain NUL characters");
/**
 * sudo -S reads its password up to the first newline, and a terminal would eat
 * other control characters (^U, ^W, DEL) before sudo saw them: no real sudo
 * password contains one, and a newline would put the rest of the value on the
 * stream that carries the script (issue #14, item 6).
 */
const sudoPassword = z.string().refine((s) => !/\p{Cc}/u.test(s), "must not contain control characters (sudo reads the password up to the first newline)");

export interface ConnectionInput {
  host: string;
  port?: number;
  user?: string;
  privateKey?: string;
  privateKeyPassphrase?: string;
  password?: string;
  agent?: string;
  hostKey?: string;
  knownHostsFile?: string;
  insecureIgnoreHostKey?: boolean;
  sudo?: boolean | { password: string };
  jumpHost?: ConnectionInput;
  readyTimeoutMs?: number;
  local?: boolean;
}

/** zod schema of a Connection (recursive through jumpHost). */
export const connectionSchema: z.ZodType<ConnectionInput> = z.lazy(() =>
  z
    .object({
      host: hostName.describe(
        "Host name, IP address, or an alias from `~/.ssh/config` (its HostName, User, Port, IdentityFile and ProxyJump apply; fields given here win). " +
          "Also the first part of every resource id (`local` instead, with `local: true`).",
      ),
      port: z.number().int().min(1).max(65535).optional().describe("SSH port.").meta({ docDefault: "ssh config, else 22" }),
      user: userName.optional().describe("Login user. Non-root users need `sudo`.").meta({ docDefault: "ssh config, else `root`" }),
      privateKey: secretString.optional().describe("Private key text (OpenSSH or PEM). Secret in state."),
      privateKeyPassphrase: secretString.optional().describe("Passphrase of an encrypted private key. Secret in state."),
      password: secretString.optional().describe("Password authentication. Secret in state."),
      agent: localPath.optional().describe("ssh-agent socket path.").meta({ docDefault: "`SSH_AUTH_SOCK` when no key or password is given" }),
      hostKey: hostKey.optional().describe("Pinned host key: an OpenSSH fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints) or a public key line (`ssh-ed25519 AAAA…`)."),
      knownHostsFile: localPath
        .optional()
        .describe(
          "The known_hosts file used when no `hostKey` is pinned (hashed entries, `[host]:port`, wildcards and `@revoked` understood). Must be a regular file (up to 16 MiB); " +
            "a FIFO or device is refused, like an IdentityFile or ssh config that is not one.",
        )
        .meta({ docDefault: "`~/.ssh/known_hosts`" }),
      insecureIgnoreHostKey: z.boolean().optional().describe("Skip host-key verification. Explicit opt-out; not recommended; not with `hostKey`.").meta({ docDefault: "`false`" }),
      sudo: z
        .union([z.boolean(), z.object({ password: sudoPassword }).strict()])
        .optional()
        .describe(
          "`true` runs commands with `sudo -n`; `{ password }` feeds sudo the password (secret in state; no control characters, since sudo reads it up to the first newline).",
        ),
      jumpHost: connectionSchema.optional().describe("A nested `Connection` to a bastion (like `ssh -J`); needs `AllowTcpForwarding` there."),
      readyTimeoutMs: z
        .number()
        .int()
        .min(1000)
        .max(600000)
        .optional()
        .describe("How long to wait for each network step, in ms (1000–600000): connect and SSH handshake, a jump host's forward to this host, each channel open.")
        .meta({ docDefault: "20000" }),
      local: z
        .boolean()
        .optional()
        .describe("Run on the machine running pulumi (no SSH), e.g. a program on the KVM host itself; `host` is then only a label. Not with `jumpHost`.")
        .meta({ docDefault: "`false`" }),
    })
    .strict()
    .superRefine((c, ctx) => {
      if (c.hostKey && c.insecureIgnoreHostKey) {
        ctx.addIssue({ code: "custom", path: ["insecureIgnoreHostKey"], message: "cannot be combined with hostKey" });
      }
      if (c.local && c.jumpHost) {
        ctx.addIssue({ code: "custom", path: ["jumpHost"], message: "cannot be combined with local: true" });
      }
    }),
);

/** The `connection` field of every kind: the connection with its description and what a change of it does. */
export const resourceConnection = connectionSchema
  .describe("The host to manage, and how to reach it: see [Connection](#connection).")
  .meta({ onChange: "replace if the host changes (`host`, or `local`), else update" });

/** Everything the SSH transport needs, after ~/.ssh/config is applied. */
export interface ResolvedConnection {
  /** What the user wrote (alias or name): used in IDs and messages. */
  label: string;
  hostname: string;
  port: number;
  user: string;
  privateKey?: string;
  /** The ssh config's IdentityFile to read when dialing (no privateKey, password or agent given). */
  identityFile?: { path: string; from: string };
  privateKeyPassphrase?: string;
  password?: string;
  agent?: string;
  /** Pinned key, or undefined when known_hosts (or nothing) is used. */
  hostKey?: string;
  knownHostsFile: string;
  insecureIgnoreHostKey: boolean;
  sudo: false | { password?: string };
  jumpHost?: ResolvedConnection;
  readyTimeoutMs: number;
  local: boolean;
}

/** $HOME as OpenSSH uses it (falling back to the passwd entry). */
function homeDir(): string {
  return process.env.HOME || os.homedir();
}

function expandHome(p: string): string {
  return p.startsWith("~/") ? path.join(homeDir(), p.slice(2)) : p;
}

/** Bound on the ssh config file (real ones are a few KiB). */
const MAX_SSH_CONFIG_BYTES = 1024 * 1024;

/** The ssh config file: $KVMNET_SSH_CONFIG (like `ssh -F`), else ~/.ssh/config. */
function sshConfigPath(): string {
  return process.env.KVMNET_SSH_CONFIG ? expandHome(process.env.KVMNET_SSH_CONFIG) : path.join(homeDir(), ".ssh", "config");
}

/**
 * The parsed ssh config, or undefined when there is none. Read synchronously
 * (hostFor() returns a Host whose label depends on it) but bounded: see
 * readRegularFileSync — a FIFO here is refused, not waited on.
 */
function readSshConfig(file: string): SSHConfig | undefined {
  const text = readRegularFileSync(file, `ssh config ${file}`, MAX_SSH_CONFIG_BYTES);
  if (text === undefined) return undefined;
  try {
    return SSHConfig.parse(text);
  } catch (e) {
    throw new KvmnetError({ kind: "InvalidArgument", message: `cannot parse ${file}`, cause: e });
  }
}

/** Does anything exist at `p`? (stat only: never opens, so never blocks on a FIFO) */
function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch {
    return false;
  }
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Parse OpenSSH's ProxyJump value `[user@]host[:port]` (first hop of a list). */
function parseJump(spec: string): { host: string; user?: string; port?: number } {
  const hop = spec.split(",")[0].trim();
  const m = /^(?:([^@]+)@)?(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(hop);
  if (!m) throw new KvmnetError({ kind: "InvalidArgument", message: `cannot parse ProxyJump ${JSON.stringify(spec)} in ~/.ssh/config` });
  return { user: m[1], host: m[2].replace(/^\[|\]$/g, ""), port: m[3] ? Number(m[3]) : undefined };
}

/**
 * Apply ~/.ssh/config like OpenSSH does for HostName, User, Port,
 * IdentityFile and ProxyJump. Explicit connection fields win over the file.
 */
export function resolveConnection(c: ConnectionInput, depth = 0): ResolvedConnection {
  if (depth > 4) throw new KvmnetError({ kind: "InvalidArgument", message: "jump host chain is deeper than 4 hops (a ProxyJump loop?)" });
  const cfgFile = sshConfigPath();
  const cfg = c.local ? undefined : readSshConfig(cfgFile);
  const computed = cfg ? cfg.compute(c.host) : {};
  const hostname = first(computed.HostName) ?? c.host;
  let identityFile: ResolvedConnection["identityFile"];
  if (!c.privateKey && !c.password && !c.agent) {
    // OpenSSH tries IdentityFile entries in order; we take the first that
    // exists. Only stat here: the transport reads it (bounded, async) when it dials.
    const files = ([] as string[]).concat(computed.IdentityFile ?? []);
    identityFile = files.map((f) => ({ path: expandHome(f), from: cfgFile })).find((f) => exists(f.path));
  }
  let jumpHost: ResolvedConnection | undefined;
  if (c.jumpHost) {
    jumpHost = resolveConnection(c.jumpHost, depth + 1);
  } else {
    const pj = first(computed.ProxyJump);
    if (pj && pj.toLowerCase() !== "none") {
      const j = parseJump(pj);
      jumpHost = resolveConnection(
        {
          host: j.host,
          user: j.user,
          port: j.port,
          // The jump hop is verified with the same known_hosts policy.
          knownHostsFile: c.knownHostsFile,
          insecureIgnoreHostKey: c.insecureIgnoreHostKey,
          privateKey: c.privateKey,
          privateKeyPassphrase: c.privateKeyPassphrase,
          agent: c.agent,
        },
        depth + 1,
      );
    }
  }
  const portText = first(computed.Port);
  const agent = c.agent ?? (!c.privateKey && !identityFile && !c.password ? process.env.SSH_AUTH_SOCK : undefined);
  return {
    label: hostOf(c),
    hostname,
    port: c.port ?? (portText ? Number(portText) : 22),
    user: c.user ?? first(computed.User) ?? "root",
    privateKey: c.privateKey,
    identityFile,
    privateKeyPassphrase: c.privateKeyPassphrase,
    password: c.password,
    agent: agent ? expandHome(agent) : undefined,
    hostKey: c.hostKey,
    knownHostsFile: expandHome(c.knownHostsFile ?? "~/.ssh/known_hosts"),
    insecureIgnoreHostKey: c.insecureIgnoreHostKey ?? false,
    sudo: c.sudo === true ? {} : typeof c.sudo === "object" ? { password: c.sudo.password } : false,
    jumpHost,
    readyTimeoutMs: c.readyTimeoutMs ?? 20000,
    local: c.local ?? false,
  };
}

/** Secrets of a connection chain, for redaction. */
export function connectionSecrets(c: ResolvedConnection | undefined): string[] {
  if (!c) return [];
  return [...SECRET_FIELDS.map((k) => c[k]), c.sudo ? c.sudo.password : undefined, ...connectionSecrets(c.jumpHost)].filter((s): s is string => !!s);
}

/** `user@host:port` (via jump) — for messages; never contains secrets. */
export function describeConnection(c: ResolvedConnection): string {
  if (c.local) return c.label;
  const base = `${c.user}@${c.label}${c.hostname !== c.label ? ` (${c.hostname})` : ""}:${c.port}`;
  return c.jumpHost ? `${base} via ${describeConnection(c.jumpHost)}` : base;
}

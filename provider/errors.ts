/**
 * The one error type of the provider.
 *
 * Errors cross realms: the dynamic-provider process loads this module from
 * node_modules while the SDK may hold another copy, so callers recognise a
 * KvmnetError by {@link KVMNET_ERROR} (a registered symbol), never `instanceof`.
 */

export const KVMNET_ERROR = Symbol.for("pulumi-kvmnet.error");

/** What went wrong, in categories a user can act on. */
export type ErrorKind =
  | "InvalidArgument" // input fails validation (raised at check, before the host is touched)
  | "NotFound" //        something the resource needs is not on the host
  | "Conflict" //        the host has an object in the way (same name, port taken, owned by someone else)
  | "Verification" //    the host does not show what was applied
  | "Permission" //      not root and no working sudo
  | "Unsupported" //     the host lacks a kernel feature or tool
  | "Unreachable" //     SSH could not connect / host key refused / connection dropped
  | "Timeout" //         a command or the connection took too long
  | "Failed" //          a host command failed for another reason (stderr says why)
  | "Bug"; //            an invariant of this provider broke

export interface ErrorDetails {
  kind: ErrorKind;
  /** Short statement of the problem, without trailing punctuation. */
  message: string;
  /** Host label (`user@host:port`) the error happened on. */
  host?: string;
  /** The command or script step that failed (secrets already redacted). */
  command?: string;
  exitCode?: number | null;
  signal?: string | null;
  stderr?: string;
  /** What the user can do about it. */
  hint?: string;
  cause?: unknown;
}

export class KvmnetError extends Error {
  readonly [KVMNET_ERROR] = true;
  readonly kind: ErrorKind;
  readonly host?: string;
  readonly command?: string;
  readonly exitCode?: number | null;
  readonly signal?: string | null;
  readonly stderr?: string;
  readonly hint?: string;
  readonly shortMessage: string;

  constructor(d: ErrorDetails) {
    super(formatMessage(d), d.cause !== undefined ? { cause: d.cause } : undefined);
    this.name = "KvmnetError";
    this.kind = d.kind;
    this.host = d.host;
    this.command = d.command;
    this.exitCode = d.exitCode;
    this.signal = d.signal;
    this.stderr = d.stderr;
    this.hint = d.hint;
    this.shortMessage = d.message;
  }
}

function formatMessage(d: ErrorDetails): string {
  const lines = [`${d.kind}: ${d.message}${d.host ? ` (host ${d.host})` : ""}`];
  if (d.command) lines.push(`  command: ${truncate(d.command, 400)}`);
  if (d.exitCode !== undefined && d.exitCode !== null) lines.push(`  exit code: ${d.exitCode}`);
  if (d.signal) lines.push(`  signal: ${d.signal}`);
  const err = d.stderr?.trim();
  if (err) lines.push(`  stderr: ${truncate(err, 2000).replace(/\n/g, "\n          ")}`);
  if (d.hint) lines.push(`  hint: ${d.hint}`);
  return lines.join("\n");
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, max) + `… (${s.length - max} more characters)`;
}

/** True for a KvmnetError from any copy of this module. */
export function isKvmnetError(e: unknown): e is KvmnetError {
  return typeof e === "object" && e !== null && (e as Record<symbol, unknown>)[KVMNET_ERROR] === true;
}

/**
 * Below this length a value is not hidden at all: one or two characters cannot be
 * told from the digits and articles of ordinary text ("exit 1", "line 12"), and
 * hiding them would garble every message (issue #14) while protecting nothing (a
 * value of two printable characters falls to ~9000 guesses).
 */
const MIN_REDACTED_LENGTH = 3;
/**
 * From this length a secret is hidden wherever it occurs, even inside a word: a
 * six-character value seldom occurs in ordinary text by chance, and when it does,
 * hiding a word is the safe side. Shorter secrets are hidden only as whole tokens
 * (not touching a letter, digit or `_`), so they never cut words apart.
 */
const ANYWHERE_LENGTH = 6;

/**
 * Remove secret values from text that may end up in an error or log. Each
 * secret is replaced wherever it occurs (whole tokens only for short ones, see
 * {@link ANYWHERE_LENGTH}), including line by line for multi-line secrets such
 * as PEM keys.
 */
export function redact(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) {
    if (!s || s.length < MIN_REDACTED_LENGTH) continue;
    out = s.length >= ANYWHERE_LENGTH ? out.split(s).join("[secret]") : replaceWholeTokens(out, s);
    for (const line of s.split(/\r?\n/)) {
      const t = line.trim();
      if (t.length >= 8 && !/^-----(BEGIN|END) /.test(t)) out = out.split(t).join("[secret]");
    }
  }
  return out;
}

function replaceWholeTokens(text: string, secret: string): string {
  const literal = secret.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return text.replace(new RegExp(`(?<![\\p{L}\\p{N}_])${literal}(?![\\p{L}\\p{N}_])`, "gu"), "[secret]");
}

/** A caught value in one line: a KvmnetError's short message, anything else as String() gives it. */
export function shortMessageOf(e: unknown): string {
  return isKvmnetError(e) ? e.shortMessage : String(e);
}

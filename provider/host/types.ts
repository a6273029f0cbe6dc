/** The one transport interface: run a POSIX sh script on a host. */

export interface RunOptions {
  /** Bytes for the script's standard input. */
  stdin?: string;
  /** Kill the command and fail after this long (default 120 s). */
  timeoutMs?: number;
  /**
   * Most bytes kept of each of stdout and stderr (default {@link MAX_OUTPUT_BYTES});
   * a command that prints more is stopped and the run fails.
   */
  maxOutputBytes?: number;
  /**
   * The script only reads the host. Callers that ask for the same script this
   * way may be given one run of it, shared, but only a run that starts after
   * each of them asked: every caller sees at least the host as it was when it
   * asked. A shared run may wait for the one before it to finish (one at a
   * time per script), so resources of one host that ask while a read is under
   * way read it once, right after.
   */
  shared?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** null when the command was ended by a signal. */
  exitCode: number | null;
  signal: string | null;
}

export interface Host {
  /** `user@host:port`, for messages. */
  readonly label: string;
  /**
   * Run `script` with /bin/sh on the host (as root: through sudo when the
   * connection asks for it). Resolves with the exit status; rejects with a
   * KvmnetError only when the script could not be run to completion
   * (unreachable, timeout, connection lost).
   */
  run(script: string, opts?: RunOptions): Promise<RunResult>;
}

export const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * Default bound on what is kept of each output stream. The largest real output
 * (`ip -j` / `nft -j` of a busy host) is a few MiB; unbounded capture crashed the
 * provider past V8's ~512 MiB string limit (issue #14, item 8). 64 MiB of each
 * stream, plus the decoded copy and JSON parse, stays far below it.
 */
export const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/** The error for a command whose `stream` went past `limit` bytes (it has been stopped). */
export function outputLimitMessage(stream: "stdout" | "stderr", limit: number): string {
  return `command printed more than ${limit} bytes on ${stream} (the limit is ${formatBytes(limit)}) and was stopped`;
}

function formatBytes(n: number): string {
  const MiB = 1024 * 1024;
  return n % MiB === 0 ? `${n / MiB} MiB` : `${n} bytes`;
}

/** The one transport interface: run a POSIX sh script on a host. */

export interface RunOptions {
  /** Bytes for the script's standard input. */
  stdin?: string;
  /** Kill the command and fail after this long (default 120 s). */
  timeoutMs?: number;
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

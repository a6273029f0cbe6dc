/**
 * How a script reaches a root shell through `sudo -S` (password on stdin),
 * shared by the SSH and local transports.
 *
 * sudo -S and the script share one stream: sudo reads the password up to its
 * first newline, one byte at a time, and leaves the rest for the command. When a
 * password carried a newline (or sudo asked for nothing, NOPASSWD), the shell
 * saw the password's text before the script; with a fixed marker line a
 * password could end the preamble itself and run what followed as root (issue
 * #14, item 6). So the marker is random per run and travels as an ARGUMENT of
 * the command, never on stdin before the password: the password is fixed before
 * the marker exists, so no password can contain it, and every line before it is
 * discarded unexecuted.
 */
import { randomBytes } from "crypto";

/**
 * sh program (`sh -c PROGRAM kvmnet-sudo MARKER`): discard stdin up to the line
 * equal to $1, then run the rest with `sh -s`. Never finding the marker is an
 * error, not an empty script.
 */
export const SKIP_TO_MARKER = 'while IFS= read -r l; do [ "$l" = "$1" ] && exec sh -s; done; echo "kvmnet: the script never arrived after the sudo password" >&2; exit 125';

export interface SudoPasswordFrame {
  /** Arguments after `sudo -S -k -p '' -- [env …]`: run SKIP_TO_MARKER with the marker. */
  args: readonly [string, string, string, string, string];
  /** Standard input: the password line, the marker line, the script. */
  stdin: string;
}

/** Frame `body` behind `password` for `sudo -S` with a fresh random marker. */
export function frameForSudoPassword(password: string, body: string): SudoPasswordFrame {
  const marker = `@@kvmnet-script-${randomBytes(16).toString("hex")}`;
  return {
    args: ["sh", "-c", SKIP_TO_MARKER, "kvmnet-sudo", marker],
    stdin: `${password}\n${marker}\n${body.endsWith("\n") ? body : body + "\n"}`,
  };
}

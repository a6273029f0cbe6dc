/**
 * The one way an nft script reaches the kernel: `nft -c` checks the whole
 * script first (syntax, and what the kernel would refuse), then `nft -f`
 * applies it as one transaction, so a script that fails changes nothing.
 */
import { andThen, Script, sh, writeFile } from "./shell";

/**
 * Check, then load, `script`. With `keepIn`, the script is written to that
 * file first and both commands read it there (NatNetwork keeps its table's
 * script in its run dir); without it the text goes on stdin, quoted by shell.ts.
 */
export function nftLoad(script: string, keepIn?: string): Script {
  if (keepIn === undefined) return sh`printf '%s' ${script} | nft -c -f - && printf '%s' ${script} | nft -f -`;
  return andThen([writeFile(keepIn, script), sh`nft -c -f ${keepIn}`, sh`nft -f ${keepIn}`]);
}

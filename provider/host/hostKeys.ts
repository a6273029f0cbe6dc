/**
 * Host-key verification: pinned keys (fingerprint or key line) and OpenSSH
 * known_hosts files (plain, hashed `|1|salt|hash`, `[host]:port`, wildcards,
 * negations, @revoked). Pure functions (but the file read); the transport calls
 * them from ssh2's hostVerifier, i.e. before authentication.
 */
import { createHash, createHmac } from "crypto";
import { readRegularFile } from "./files";

/** OpenSSH fingerprint of a raw public key blob: `SHA256:<base64 without padding>`. */
export function fingerprint(keyBlob: Buffer): string {
  return "SHA256:" + createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "");
}

/** The key type written inside a public key blob (`ssh-ed25519`, …). */
export function keyType(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return "unknown";
  const len = keyBlob.readUInt32BE(0);
  return keyBlob.subarray(4, 4 + len).toString("latin1");
}

/** Does the offered key match a pin (`SHA256:…` or `type base64 [comment]`)? */
export function matchesPin(pin: string, keyBlob: Buffer): boolean {
  const p = pin.trim();
  if (p.startsWith("SHA256:")) return p.replace(/=+$/, "") === fingerprint(keyBlob);
  const parts = p.split(/\s+/);
  if (parts.length < 2) return false;
  return Buffer.from(parts[1], "base64").equals(keyBlob) && parts[0] === keyType(keyBlob);
}

export type KnownHostsVerdict = "match" | "mismatch" | "unknown" | "revoked";

/** Convert an OpenSSH host pattern (`*`, `?`) to a RegExp. */
function patternToRegExp(p: string): RegExp {
  const esc = p
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${esc}$`, "i");
}

/** The name known_hosts stores for a host: `host` on port 22, else `[host]:port`. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    const h = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
    return h === hash;
  }
  let matched = false;
  for (const pat of field.split(",")) {
    if (pat.startsWith("!")) {
      if (patternToRegExp(pat.slice(1)).test(name)) return false;
    } else if (patternToRegExp(pat).test(name)) {
      matched = true;
    }
  }
  return matched;
}

/**
 * Look `names` (host names/aliases, already in known_hosts form) up in the
 * text of a known_hosts file and judge the offered key.
 */
export function judgeKnownHosts(text: string, names: readonly string[], keyBlob: Buffer): KnownHostsVerdict {
  const offeredType = keyType(keyBlob);
  let sawHost = false;
  let matched = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    let fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0].startsWith("@")) {
      marker = fields[0];
      fields = fields.slice(1);
    }
    if (fields.length < 3) continue;
    const [hostsField, type, b64] = fields;
    if (!names.some((n) => hostFieldMatches(hostsField, n))) continue;
    if (marker === "@cert-authority") continue; // certificates are not supported; ignore CA lines
    const same = type === offeredType && Buffer.from(b64, "base64").equals(keyBlob);
    if (marker === "@revoked") {
      if (same) return "revoked";
      continue;
    }
    sawHost = true;
    if (same) matched = true;
  }
  if (matched) return "match";
  return sawHost ? "mismatch" : "unknown";
}

/** Bound on a known_hosts file (large fleets keep a few MiB). */
export const MAX_KNOWN_HOSTS_BYTES = 16 * 1024 * 1024;

/**
 * Read a known_hosts file; a missing file is an empty one. Never blocks: a
 * FIFO or device is refused, naming connection.knownHostsFile (see ./files.ts).
 */
export async function readKnownHosts(file: string): Promise<string> {
  return (await readRegularFile(file, `connection.knownHostsFile ${file}`, MAX_KNOWN_HOSTS_BYTES)) ?? "";
}

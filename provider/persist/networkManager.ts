/**
 * What NetworkManager asks of the lifecycle: it acts on profile changes by
 * itself, after the command that made them returned, so an object with
 * profiles is looked at again until it settles.
 */
import { createHash } from "crypto";
import type { HostSnapshot } from "../observe";
import { ownedFiles, PersistSet } from "./files";

/**
 * NetworkManager acts on a profile reload by itself, after `nmcli connection
 * reload` returned: a bridge deleted live while its port's profile was still
 * loaded is brought back by that port's autoconnect, and taken down again once
 * the reload dropped the profiles (seen in the lab: back for about half a
 * second). So when an object's files include NetworkManager profiles, a
 * read-back that is not yet what the change wants is looked at again until it
 * is, for up to this long, before it counts as a failure.
 */
export const NM_SETTLE_MS = 10_000;

/** Further delete passes when NetworkManager kept (or brought back) an object after its profiles were removed. */
export const NM_DELETE_PASSES = 2;

/** Does object kind/name persist (or will it) through NetworkManager profiles? */
export function usesNetworkManager(kind: string, name: string, snap: HostSnapshot, set?: PersistSet): boolean {
  const paths = [...ownedFiles(snap, kind, name).map((f) => f.path), ...(set?.files ?? []).map((f) => f.path)];
  return paths.some((p) => p.startsWith("/etc/NetworkManager/"));
}

/**
 * `after`, or once NetworkManager settled, a later snapshot (from `observeAgain`)
 * for which `done` holds: the last one looked at when it never did.
 */
export async function settled(observeAgain: () => Promise<HostSnapshot>, after: HostSnapshot, nm: boolean, done: (s: HostSnapshot) => boolean): Promise<HostSnapshot> {
  if (!nm || done(after)) return after;
  const deadline = Date.now() + NM_SETTLE_MS;
  let snap = after;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    snap = await observeAgain();
    if (done(snap)) break;
  }
  return snap;
}
/** A UUID (version 5 layout) derived from `seed`: NetworkManager profiles need one, and it must not change between renders. */
export function stableUuid(seed: string): string {
  const h = createHash("sha1").update(`pulumi-kvmnet\0${seed}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

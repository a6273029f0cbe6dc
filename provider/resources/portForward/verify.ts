/** Compare a forward on the host with what was asked (nmstate-style messages). */
import type { HostSnapshot } from "../../observe";
import { observeForward } from "./observe";
import { desiredTable, PF_KIND } from "./plan";
import { fromRange, PortForwardInputs } from "./schema";

const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && [...a].sort().join() === [...b].sort().join();

/** Every way the host's forward differs from `desired`; empty when it matches. */
export function verifyPortForward(desired: PortForwardInputs, snap: HostSnapshot): string[] {
  const want = desiredTable(desired, snap);
  const obs = observeForward(snap, want.table);
  const what = `${PF_KIND} ${desired.name}`;
  if (!obs) return [`${what} table ip ${want.table} does not exist`];
  const problems = obs.anomalies.map((a) => `${what} ${a}`);
  const cmp = (field: string, w: string | number | boolean | undefined, c: string | number | boolean | undefined) => {
    if (w !== c) problems.push(`${what} ${field} desired ${w ?? "(none)"}, current ${c ?? "(none)"}`);
  };
  cmp("destination", want.destination, obs.destination);
  cmp("destinationPort", fromRange(want.destRange), obs.destinationPort);
  if (!sameSet(want.sourceCidrs, obs.sourceCidrs)) problems.push(`${what} sourceCidrs desired [${want.sourceCidrs.join(", ")}], current [${obs.sourceCidrs.join(", ")}]`);
  cmp("hairpin", want.hairpin, obs.hairpin);
  cmp("description", want.description, obs.description);
  // Not compared: the hairpin masquerade subnet. It is derived from the host's
  // addresses when the table is written, not declared, and a network the
  // destination lives on may come or go around the forward (the engine creates
  // a NatNetwork and its forwards at once): judging it against a later
  // snapshot failed creates and showed drift that no input could repair. A
  // NatNetwork masquerades hairpinned DNAT into its own subnet itself.
  if (!obs.forwardAccept) problems.push(`${what} forward accept rule desired present, current absent`);
  return problems;
}

export { sameSet };

/**
 * The PortForward kind: schema · observe · plan · render · verify · persist
 * (a boot unit of our own, persist.ts), wired into the lifecycle.
 */
import { isDeepStrictEqual } from "util";
import { inputKeysOf } from "../../fields";
import { sameHost } from "../../identity";
import type { HostSnapshot } from "../../observe";
import { checkWith } from "../../validate";
import type { KindProvider } from "../kind";
import { makeKindProvider } from "../lifecycle";
import { keysOverlap, observeForward } from "./observe";
import { portForwardPersist } from "./persist";
import { desiredTable, PF_KIND, planPortForward, planPortForwardDelete } from "./plan";
import { renderForwardDelete, renderForwardPlan } from "./render";
import { PortForwardInputs, portForwardArgsSchema, portForwardInputsSchema, tableName, toRange } from "./schema";
import { sameSet, verifyPortForward } from "./verify";

export { portForwardArgsSchema, portForwardInputsSchema, deriveName, tableName } from "./schema";
export type { PortForwardInputs, PortForwardArgs } from "./schema";

export const PORT_FORWARD_INPUT_KEYS = inputKeysOf(portForwardInputsSchema);

/** Fields that make up a forward's identity (its table): changing one replaces the forward. */
const IDENTITY_KEYS = ["protocol", "hostPort", "hostAddress"] as const;

export const IP_FORWARD_WARNING = "forwarded traffic will not flow until net.ipv4.ip_forward=1; a NatNetwork turns it on";

/** Things that make the forward not work as a user would expect, though it is applied as asked. */
export function forwardWarnings(inputs: PortForwardInputs, snap: HostSnapshot): string[] {
  const warnings: string[] = [];
  if (snap.sysctls["ipv4/ip_forward"] === "0") warnings.push(IP_FORWARD_WARNING);
  if (inputs.hairpin && !desiredTable(inputs, snap).masqueradeSubnet) {
    warnings.push(`no host address is on a subnet holding ${inputs.destination}: guests of its network cannot use the forward through the host address (hairpin) until one is`);
  }
  return warnings;
}

/**
 * Outputs: the inputs as the host has them (so refresh shows drift: a changed
 * destination, source list, hairpin or description), plus `table`, `warnings`
 * and `drift` (what about the table differs from what this resource wrote).
 * A field the rules no longer show keeps its declared value, and `drift` says so.
 */
export function portForwardOutputs(inputs: PortForwardInputs, snap: HostSnapshot): Record<string, unknown> | undefined {
  const table = tableName(inputs.name);
  const obs = observeForward(snap, table);
  if (!obs) return undefined;
  const args: Record<string, unknown> = {};
  for (const k of PORT_FORWARD_INPUT_KEYS) if (inputs[k] !== undefined) args[k] = inputs[k];
  const seen: Record<string, unknown> = {
    ...args,
    destination: obs.destination ?? inputs.destination,
    destinationPort: obs.destinationPort ?? inputs.destinationPort,
    sourceCidrs: sameSet(inputs.sourceCidrs, obs.sourceCidrs) ? inputs.sourceCidrs : obs.sourceCidrs,
    hairpin: obs.hairpin,
    description: obs.description,
  };
  if (seen.description === undefined) delete seen.description;
  // Observed values that are not valid inputs (a hand-written target) cannot be
  // stored as inputs: keep the declared ones; `drift` names the difference.
  const valid = checkWith(portForwardArgsSchema, seen).value ? seen : args;
  return { ...valid, table, warnings: forwardWarnings(inputs, snap), drift: verifyPortForward(inputs, snap) };
}

function identity(v: Record<string, unknown>) {
  try {
    return { protocol: v.protocol as "tcp" | "udp", hostAddress: v.hostAddress as string | undefined, hostRange: toRange(v.hostPort as number | string) };
  } catch {
    return undefined;
  }
}

/**
 * The lifecycle keys everything on a `name`; a forward has none from the user,
 * so the schema derives one from its identity and check() keeps it out of the
 * stored inputs. Unlike Bridge, an optional field removed from the program is
 * a change: no hostAddress means every address, no description no comment.
 */
const kindProvider: KindProvider = makeKindProvider<PortForwardInputs>({
  kind: PF_KIND,
  schema: portForwardInputsSchema,
  inputKeys: PORT_FORWARD_INPUT_KEYS,
  derivedInputs: ["name"],
  removalIsChange: true,
  addedInputs: { adopt: false },
  replaces(olds, news) {
    const r: string[] = IDENTITY_KEYS.filter((k) => !isDeepStrictEqual(olds[k], news[k]));
    if (!sameHost(olds.connection, news.connection)) r.push("connection");
    return r;
  },
  deleteBeforeReplace(olds, news) {
    // The new forward would conflict with the old one while both exist.
    const a = identity(olds);
    const b = identity(news);
    return sameHost(olds.connection, news.connection) && (!a || !b || keysOverlap(a, b));
  },
  plan: (desired, snap, previous) => renderForwardPlan(planPortForward(desired, snap, previous)),
  planDelete: (props, snap) => renderForwardDelete(planPortForwardDelete(props, snap)),
  verify: verifyPortForward,
  outputs: portForwardOutputs,
  // Both warnings depend on other objects (ip_forward, a network holding the destination).
  keptOnRead: ["warnings"],
  persist: portForwardPersist,
});

/**
 * State written before forwards had `persistence` lacks the field; it meant
 * what "runtime" means now (whatever the default becomes), so such state
 * is not a change by itself.
 */
export const portForwardProvider: KindProvider = {
  ...kindProvider,
  diff: (id, olds, news) => kindProvider.diff(id, olds?.persistence === undefined ? { ...olds, persistence: "runtime" } : olds, news),
};

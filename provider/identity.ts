/**
 * Who a resource is: the registry of resource kinds (the SDK class and type
 * token, and the spelling in ids and on hosts), which host a connection names,
 * and the resource id built from both.
 *
 * Imported by the SDK in the program process as well as by the provider, so it
 * imports nothing: the provider objects themselves are keyed by the same
 * {@link KindName} in provider/index.ts.
 */

/**
 * Every resource kind, keyed by the name the SDK and provider/index.ts use.
 * `type` is the SDK class name and the last part of the type token; `idKind`
 * is the kind's spelling in resource ids (`<host>/<idKind>/<name>`) and on
 * hosts (creation records `<idKind>.<name>`, /etc/kvmnet/owned/<idKind>/).
 * Both are in users' state and on their hosts: never change one.
 */
export const KINDS = {
  bridge: { type: "Bridge", idKind: "bridge" },
  natNetwork: { type: "NatNetwork", idKind: "natNetwork" },
  pciPassthrough: { type: "PciPassthrough", idKind: "pcipassthrough" },
  portForward: { type: "PortForward", idKind: "portforward" },
  vlanSubinterface: { type: "VlanSubinterface", idKind: "vlanSubinterface" },
  tapInterface: { type: "TapInterface", idKind: "tapInterface" },
} as const;

/** A kind's name in the registry: `portForward`, what the SDK and provider/index.ts key kinds by. */
export type KindName = keyof typeof KINDS;

/** A kind's spelling in ids and host paths (`portforward`, not `portForward`). */
export type IdKind = (typeof KINDS)[KindName]["idKind"];

/** The SDK class name of a kind. */
export type TypeName = (typeof KINDS)[KindName]["type"];

/** Every kind name, in registry order. */
export const KIND_NAMES = Object.keys(KINDS) as KindName[];

/** The module of every kvmnet type token (the dynamic resource's `module` argument). */
export const TYPE_MODULE = "kvmnet";

/**
 * The type token the engine records for a kind, as @pulumi/pulumi's
 * dynamic.Resource builds it from {@link TYPE_MODULE} and the type name:
 * `pulumi-nodejs:dynamic/kvmnet:Bridge`. It is part of every URN in users' state.
 */
export function typeToken<K extends KindName>(kind: K): `pulumi-nodejs:dynamic/${typeof TYPE_MODULE}:${(typeof KINDS)[K]["type"]}` {
  return `pulumi-nodejs:dynamic/${TYPE_MODULE}:${KINDS[kind].type}`;
}

/** The host part of the id of a resource on the machine running pulumi (`connection.local`). */
export const LOCAL_HOST = "local";

/** The fields of a connection that say which machine it reaches. */
export interface ConnectionIdentity {
  host: string;
  local?: boolean;
}

/**
 * The machine a connection reaches, as ids name it: `"local"` for a
 * `local: true` connection, whose `host` is only a label (relabelling it is no
 * move to another machine), else `host` as the user wrote it (an ~/.ssh/config
 * alias stays the alias). Resources compare it to decide whether a change of
 * connection moves them to another host (a replacement).
 *
 * Takes raw inputs too (diff's olds and news): a `local` that is not a boolean
 * yet (the engine's unknown placeholder during preview) is returned as it is,
 * so it equals no known host and the change shows as a replacement, as an
 * unknown `host` does. Undefined when there is no host at all.
 */
export function hostOf(connection: ConnectionIdentity): string;
export function hostOf(connection: unknown): string | undefined;
export function hostOf(connection: unknown): string | undefined {
  if (connection === null || typeof connection !== "object") return undefined;
  const { host, local } = connection as { host?: unknown; local?: unknown };
  if (local === true) return LOCAL_HOST;
  if (local !== undefined && local !== false) return typeof local === "string" ? local : JSON.stringify(local);
  return typeof host === "string" ? host : undefined;
}

/** Whether two connections reach the same machine (see {@link hostOf}). */
export function sameHost(a: unknown, b: unknown): boolean {
  return hostOf(a) === hostOf(b);
}

/** The id of a resource: `<host>/<idKind>/<name>`, e.g. `kvm1/portforward/tcp_any_8080`, `local/bridge/br0`. */
export function resourceId(idKind: string, connection: ConnectionIdentity, name: string): string {
  return `${hostOf(connection)}/${idKind}/${name}`;
}

/** An id taken apart. */
export interface ParsedId {
  /** The host part: `host` as the user wrote it, or {@link LOCAL_HOST}. */
  host: string;
  kind: KindName;
  name: string;
}

/**
 * Take an id apart, or undefined when it is not one of ours. The kind may be
 * spelled as in ids (`portforward`) or as the registry key (`portForward`):
 * both reach users' state through tools and hand edits, and mean one kind.
 * Host names never contain '/', so the name is everything after the second one.
 */
export function parseResourceId(id: string): ParsedId | undefined {
  const m = /^([^/]+)\/([^/]+)\/(.+)$/.exec(id);
  if (!m) return undefined;
  const kind = KIND_NAMES.find((k) => k === m[2] || KINDS[k].idKind === m[2]);
  return kind ? { host: m[1], kind, name: m[3] } : undefined;
}

/**
 * Validators shared by every resource schema, and the mapping of zod issues to
 * the engine's check failures. Strict on purpose: anything that passes here is
 * later written into shell and nft text (through shell.ts), so these rules are
 * the first of two fences.
 */
import { z } from "zod";
import * as ipaddr from "ipaddr.js";

/**
 * The engine's placeholder for values not known until apply (preview).
 *
 * check cannot tell it from the same string typed into a program: the dynamic
 * provider's check gets no preview flag, and runs with unknowns during preview
 * and with known values during up. So check validates around it, and create
 * and update, which the engine calls only with known values, refuse it like
 * any invalid value (`checkWith(…, "refuse")`), before any host is contacted
 * (and diff never plans a delete-first replacement around it). The SDK, which
 * can tell, refuses it typed as a plain value when a resource is declared.
 */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Names the kernel reserves for itself in /sys/class/net and /proc/sys/net. */
const RESERVED_IFNAMES = new Set([".", "..", "all", "default", "bonding_masters"]);

/**
 * A Linux interface name: 1–15 chars of [A-Za-z0-9_.-] (IFNAMSIZ 16 with the NUL),
 * not starting with '-' or '.'.
 *
 * Narrower than the kernel's dev_valid_name on purpose: the name becomes part
 * of paths (state files under /run/kvmnet/state, manifests, networkd/NM/ifupdown
 * files) that observe lists with `*` globs, and `*` does not match a leading
 * '.', so a hidden name's files would be left behind by delete (#14); a
 * leading '-' reads as an option to ip/nmcli.
 */
export const ifname = z
  .string()
  .min(1, "must not be empty")
  .max(15, "must be at most 15 characters (Linux IFNAMSIZ)")
  .regex(/^[A-Za-z0-9_.-]+$/, "may contain only letters, digits, '_', '.' and '-'")
  .refine((s) => !RESERVED_IFNAMES.has(s), "is a name the kernel reserves")
  .refine((s) => !s.startsWith("-"), "must not start with '-'")
  .refine((s) => s === "." || s === ".." || !s.startsWith("."), "must not start with '.' (its files would be hidden from the globs that list them)");

/**
 * {@link ifname} as it was before #14 (a leading '.' allowed), for stored
 * state only: an object created then must stay readable, or it could be
 * neither updated (the old inputs are parsed first) nor refreshed nor destroyed.
 */
export const storedIfname = z
  .string()
  .min(1, "must not be empty")
  .max(15, "must be at most 15 characters (Linux IFNAMSIZ)")
  .regex(/^[A-Za-z0-9_.-]+$/, "may contain only letters, digits, '_', '.' and '-'")
  .refine((s) => !RESERVED_IFNAMES.has(s), "is a name the kernel reserves")
  .refine((s) => !s.startsWith("-"), "must not start with '-'");

/** A unicast MAC address, written as six colon-separated hex pairs. Lower-cased. */
export const macAddress = z
  .string()
  .regex(/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/, "must be six hex pairs separated by ':' (52:54:00:12:34:56)")
  .transform((s) => s.toLowerCase())
  .refine((s) => (parseInt(s.slice(0, 2), 16) & 1) === 0, "must be a unicast address (first octet even)")
  .refine((s) => s !== "00:00:00:00:00:00", "must not be all zeros");

/** An interface address in CIDR form (host bits allowed: 192.168.1.10/24). Normalised. */
export const interfaceCidr = z.string().transform((s, ctx) => {
  const parsed = parseCidr(s);
  if (!parsed) {
    ctx.addIssue({ code: "custom", message: `is not an IPv4 or IPv6 address in CIDR form (10.0.0.1/24, fd00::1/64)` });
    return z.NEVER;
  }
  const why = notAnInterfaceAddress(parsed.address);
  if (why) {
    ctx.addIssue({ code: "custom", message: `${s} ${why}` });
    return z.NEVER;
  }
  return `${parsed.address}/${parsed.prefix}`;
});

/**
 * Why `address` cannot be an address this provider assigns and reads back, or
 * undefined. The kernel refuses ::1, :: and IPv6 multicast, silently drops
 * 0.0.0.0/8, gives 127/8 host scope, and makes its own fe80::/10 on every link;
 * observe reads neither scope-host nor link-local IPv6 addresses, so such an
 * address would be added and then fail verification.
 */
export function notAnInterfaceAddress(address: string): string | undefined {
  const range = ipaddr.parse(address).range();
  switch (range) {
    case "linkLocal":
      return address.includes(":")
        ? "is an IPv6 link-local address (fe80::/10): the kernel manages link-local addressing on every link, and this provider neither assigns nor reads it"
        : undefined;
    case "loopback":
      return "is a loopback address: it belongs on lo, not on a bridge or VLAN";
    case "unspecified":
      return "is an unspecified address (0.0.0.0/8, ::), not an interface address";
    case "multicast":
      return "is a multicast address; an interface address must be unicast";
    case "broadcast":
      return "is the broadcast address; an interface address must be unicast";
    default:
      return undefined;
  }
}

/** Parse "addr/prefix"; returns the normalised address text or undefined. */
export function parseCidr(s: string): { address: string; prefix: number; family: "inet" | "inet6" } | undefined {
  if (typeof s !== "string" || !/^[0-9A-Fa-f:.]+\/\d{1,3}$/.test(s)) return undefined;
  try {
    const [addr, prefix] = ipaddr.parseCIDR(s);
    if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress()) return undefined;
    const family = addr.kind() === "ipv4" ? "inet" : "inet6";
    if (family === "inet" && !ipaddr.IPv4.isValidFourPartDecimal(s.split("/")[0])) return undefined;
    return { address: addr.toString(), prefix, family };
  } catch {
    return undefined;
  }
}

/** Ordinary host names, IPv4/IPv6 literals and ~/.ssh/config aliases. */
export const hostName = z
  .string()
  .min(1, "must not be empty")
  .max(253, "must be at most 253 characters")
  .refine(
    (s) => /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/.test(s) || ipaddr.IPv6.isValid(s),
    "must be a host name, an IP address or a ~/.ssh/config alias (letters, digits, '.', '-', '_')",
  );

/** A file path on the machine running pulumi: absolute or starting with ~/. */
export const localPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((s) => s.startsWith("/") || s.startsWith("~/"), "must be an absolute path or start with ~/")
  .refine((s) => !/[\0\n\r]/.test(s), "must not contain NUL or newline characters");

/**
 * The connection's credential fields, the one list of them: the SDK makes them
 * secret in state, redaction collects them, and check never echoes a value
 * under one of these names (which covers sudo's `{ password }` too).
 */
export const SECRET_FIELDS = ["privateKey", "privateKeyPassphrase", "password"] as const;

const SECRET_FIELD_NAMES: ReadonlySet<string> = new Set(SECRET_FIELDS);

export interface CheckFailure {
  property: string;
  reason: string;
}

/** True if `v` is, or contains, the engine's unknown placeholder. */
export function containsUnknown(v: unknown): boolean {
  if (v === UNKNOWN) return true;
  if (Array.isArray(v)) return v.some(containsUnknown);
  if (v && typeof v === "object") return Object.values(v).some(containsUnknown);
  return false;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const k of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k as string];
  }
  return cur;
}

/** The paths (from `root`) of every value in `v` that is the unknown placeholder. */
export function unknownPaths(v: unknown, path: PropertyKey[] = []): PropertyKey[][] {
  if (v === UNKNOWN) return [path];
  if (Array.isArray(v)) return v.flatMap((x, i) => unknownPaths(x, [...path, i]));
  if (v && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => unknownPaths(x, [...path, k]));
  return [];
}

/**
 * How {@link checkWith} treats the placeholder: "validateAround" (check:
 * during preview a value may not be known yet) or "refuse" (create/update:
 * every value is known, so the placeholder is a literal, and not a valid one).
 */
export type UnknownPolicy = "validateAround" | "refuse";

/**
 * Parse `inputs` with `schema` and turn zod issues into engine check failures
 * `{property: <top-level key>, reason: "<dot.path>: <message>"}`.
 *
 * Issues located at (or inside) a value that is still unknown are dropped:
 * during preview we validate around unknowns, never on them. With "refuse",
 * each placeholder is itself a failure at its path (whether or not the
 * field's own rule would take the string).
 */
export function checkWith<S extends z.ZodType>(
  schema: S,
  inputs: Record<string, unknown>,
  unknowns: UnknownPolicy = "validateAround",
): { value?: z.output<S>; failures: CheckFailure[] } {
  const failures: CheckFailure[] = [];
  if (unknowns === "refuse") {
    for (const path of unknownPaths(inputs)) {
      failures.push({
        property: String(path[0]),
        reason: `${path.map(String).join(".")}: is the engine's placeholder for an unknown value (${UNKNOWN}); create and update receive only known values, so here it can only be a literal, which is not a valid value`,
      });
    }
  }
  const result = schema.safeParse(inputs);
  if (result.success) return failures.length > 0 ? { failures } : { value: result.data, failures };
  for (const issue of result.error.issues) {
    const path = issue.path;
    // Walk up the path: an unknown anywhere on it makes the issue moot.
    let moot = false;
    for (let i = path.length; i >= 0 && !moot; i--) {
      if (containsUnknownShallow(valueAt(inputs, path.slice(0, i)))) moot = true;
    }
    if (moot) continue;
    const property = path.length > 0 ? String(path[0]) : "(inputs)";
    const dotted = path.length > 0 ? path.map(String).join(".") : "(inputs)";
    failures.push({ property, reason: `${dotted}: ${describeIssue(issue, inputs)}` });
  }
  return { failures };
}

function containsUnknownShallow(v: unknown): boolean {
  return v === UNKNOWN;
}

function describeIssue(issue: z.core.$ZodIssue, inputs: Record<string, unknown>): string {
  if (issue.code === "unrecognized_keys") return `unknown field(s) ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}`;
  const value = valueAt(inputs, issue.path);
  if (issue.code === "invalid_type" && value === undefined) return "is required";
  // Never echo a secret back, even a malformed one, nor a value that holds one
  // (a union such as connection.sudo reports its issue at the parent object).
  const secret = issue.path.some((k) => SECRET_FIELD_NAMES.has(String(k))) || holdsSecret(value);
  const shown = value === undefined ? "" : secret ? " (value hidden: secret)" : ` (got ${preview(value)})`;
  return `${issue.message}${shown}`;
}

/** True if `v` is an object or array with a secret field anywhere inside. */
function holdsSecret(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(holdsSecret);
  if (v && typeof v === "object") return Object.entries(v).some(([k, x]) => SECRET_FIELD_NAMES.has(k) || holdsSecret(x));
  return false;
}

function preview(v: unknown): string {
  const s = typeof v === "string" ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 80 ? s.slice(0, 77) + "…" : s;
}

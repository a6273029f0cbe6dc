import * as pulumi from "@pulumi/pulumi";
import { inputKeysOf } from "../provider/fields";
import { KindName, KINDS, TYPE_MODULE } from "../provider/identity";
import { INPUT_SCHEMAS } from "../provider/resources/inputs";
import { UNKNOWN } from "../provider/validate";
import { Connection, protectConnection } from "./types";

/** The type of what the closures below require at run time (a type only: nothing is imported here). */
type ProviderModule = typeof import("../provider");

/**
 * The dynamic provider object for one resource kind.
 *
 * The engine serializes these methods into the deployment. Each one requires
 * the real implementation from node_modules when it runs, so the serialized
 * closure stays tiny, captures no live object (SSH client, socket), and every
 * resource of a deployment shares the one SSH pool in that module.
 */
export function kindProvider(kind: KindName): pulumi.dynamic.ResourceProvider {
  // One object per kind for the whole program: @pulumi/pulumi caches a dynamic
  // provider's serialization by object identity, so every resource of a kind after the
  // first reuses it instead of serializing six closures again (bench/fleet: the program
  // process was the largest CPU cost of a fleet deployment).
  let p = providers.get(kind);
  if (!p) providers.set(kind, (p = newKindProvider(kind)));
  return p;
}

const providers = new Map<KindName, pulumi.dynamic.ResourceProvider>();

function newKindProvider(kind: KindName): pulumi.dynamic.ResourceProvider {
  return {
    check: (olds: Record<string, unknown>, news: Record<string, unknown>) => (require("pulumi-kvmnet/provider") as ProviderModule).kinds[kind].check(olds, news),
    diff: (id: string, olds: Record<string, unknown>, news: Record<string, unknown>) => (require("pulumi-kvmnet/provider") as ProviderModule).kinds[kind].diff(id, olds, news),
    create: (inputs: Record<string, unknown>) => (require("pulumi-kvmnet/provider") as ProviderModule).kinds[kind].create(inputs),
    read: (id: string, props: Record<string, unknown>) => (require("pulumi-kvmnet/provider") as ProviderModule).kinds[kind].read(id, props),
    update: (id: string, olds: Record<string, unknown>, news: Record<string, unknown>) => (require("pulumi-kvmnet/provider") as ProviderModule).kinds[kind].update(id, olds, news),
    delete: (id: string, props: Record<string, unknown>) => (require("pulumi-kvmnet/provider") as ProviderModule).kinds[kind].delete(id, props),
  };
}

/** Options every kvmnet resource gets: the connection (credentials) is secret in outputs. */
export function withSecretConnection(opts: pulumi.CustomResourceOptions | undefined): pulumi.CustomResourceOptions {
  return { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "connection"] };
}

/** The dotted paths of the plain values in `v` (not Outputs or promises) that are the placeholder. */
function literalUnknownPaths(v: unknown, path: string[] = []): string[] {
  if (v === UNKNOWN) return [path.join(".") || "(args)"];
  if (pulumi.Output.isInstance(v) || (v !== null && typeof v === "object" && typeof (v as { then?: unknown }).then === "function")) return [];
  if (Array.isArray(v)) return v.flatMap((x, i) => literalUnknownPaths(x, [...path, String(i)]));
  if (v !== null && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => literalUnknownPaths(x, [...path, k]));
  return [];
}

/**
 * Refuse the engine's unknown-value placeholder typed into a program as a
 * plain value. The provider's check cannot tell it from a value not known yet
 * during preview (#14), but the program can: such a value reaches it as an
 * Output, never as that string. So a plain value holding it fails here, when
 * the resource is declared (preview included), naming the field. One resolved
 * through an Output is refused by create/update before they touch the host.
 */
export function refuseLiteralUnknown(type: string, name: string, args: object): void {
  const paths = literalUnknownPaths(args);
  if (paths.length === 0) return;
  throw new Error(`kvmnet:${type} ${name}: ${paths.map((p) => `${p}: is the engine's placeholder for an unknown value (${UNKNOWN}), not a valid value`).join("; ")}`);
}

/**
 * What every kvmnet resource class extends: it names its kind, and the kind
 * registry (provider/identity.ts) gives the provider object, the type token
 * (`pulumi-nodejs:dynamic/kvmnet:<Type>`) and the name in messages, so no
 * class spells them itself.
 */
export abstract class KvmnetResource extends pulumi.dynamic.Resource {
  /**
   * Registers the resource. `computed` names the outputs that are not inputs;
   * the inputs come from the kind's schema (provider/resources/inputs.ts).
   */
  protected constructor(kind: KindName, name: string, args: { connection: pulumi.Input<Connection> }, computed: readonly string[], opts?: pulumi.CustomResourceOptions) {
    const type = KINDS[kind].type;
    refuseLiteralUnknown(type, name, args);
    // A copy: the base constructor writes __provider into it.
    const props: Record<string, unknown> = { ...args, connection: protectConnection(args.connection) };
    // An output is registered only when its key is present: seed every input the
    // program left out, and every computed output, as undefined.
    for (const k of [...inputKeysOf(INPUT_SCHEMAS[kind]), ...computed]) if (!(k in props)) props[k] = undefined;
    super(kindProvider(kind), name, props, withSecretConnection(opts), TYPE_MODULE, type);
  }
}

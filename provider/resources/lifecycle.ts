/**
 * The glue between the engine's dynamic-provider calls and a resource kind:
 * check (zod → failures), diff (pure), and create/read/update/delete with the
 * observe → plan → render → apply → verify flow. Kinds supply the pieces.
 *
 * The methods' shapes match `pulumi.dynamic.ResourceProvider`; nothing from
 * @pulumi/pulumi is imported here (provider code runs in the dynamic-provider
 * process and must not depend on the program's copy of the SDK).
 */
import { createHash } from "crypto";
import { isDeepStrictEqual } from "util";
import type { z } from "zod";
import { apply, observe } from "../apply";
import { KvmnetError, shortMessageOf } from "../errors";
import { ConnectionInput, Host, hostFor } from "../host";
import { resourceId } from "../identity";
import { HostSnapshot, STATE_DIR } from "../observe";
import { Backend, Persistence, persistDrift, PersistSet, persistSteps, resolveBackend, withPersistence } from "../persist";
import { NM_DELETE_PASSES, settled, usesNetworkManager } from "../persist/networkManager";
import { Plan } from "../render";
import { Script, sh, writeFile } from "../shell";
import { checkWith, CheckFailure, containsUnknown } from "../validate";

export interface CheckResult {
  inputs: Record<string, unknown>;
  failures?: CheckFailure[];
}
export interface DiffResult {
  changes: boolean;
  replaces: string[];
  deleteBeforeReplace: boolean;
}
export interface CreateResult {
  id: string;
  outs: Record<string, unknown>;
}
export interface ReadResult {
  id: string;
  props: Record<string, unknown>;
  /** Inputs as the host has them, so a preview after refresh shows the drift field by field. */
  inputs?: Record<string, unknown>;
}

/** The six calls of a dynamic resource provider. */
export interface KindProvider {
  check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<CheckResult>;
  diff(id: string, olds: Record<string, unknown>, news: Record<string, unknown>): Promise<DiffResult>;
  create(inputs: Record<string, unknown>): Promise<CreateResult>;
  read(id: string, props: Record<string, unknown>): Promise<ReadResult>;
  update(id: string, olds: Record<string, unknown>, news: Record<string, unknown>): Promise<{ outs: Record<string, unknown> }>;
  delete(id: string, props: Record<string, unknown>): Promise<void>;
}

export interface BaseInputs {
  connection: ConnectionInput;
  name: string;
}

export interface KindSpec<I extends BaseInputs> {
  /** The kind's spelling in ids (`<host>/<kind>/<name>`) and host paths: its idKind in provider/identity.ts. */
  kind: string;
  schema: z.ZodType<I>;
  /**
   * The schema for stored state (read, delete, update's old inputs) when it
   * must accept values written before a rule was tightened; default `schema`.
   */
  storedSchema?: z.ZodType<I>;
  /** Input field names (diff compares these). */
  inputKeys: readonly string[];
  /**
   * Input fields whose stored value is the host's actual value when the user
   * left them unset (Bridge.macAddress). A stored value the schema would not
   * accept as input (a bridge's all-zero MAC) is dropped when state is parsed.
   */
  computedInputs?: readonly string[];
  /**
   * Whether an optional field removed from the program is a change. Bridge:
   * false (an unset setting is left as the host has it). PortForward: true
   * (no hostAddress means every address). Or the fields for which it is:
   * VlanSubinterface ["bridge"] (no bridge means in no bridge; unset mtu stays unmanaged).
   */
  removalIsChange?: boolean | readonly string[];
  /**
   * Inputs added after state was first written (NatNetwork's and PortForward's
   * `adopt`), with the value that state without them meant: diff reads stored
   * inputs (old or new) lacking one as having this value, so upgrading is no change by itself.
   */
  addedInputs?: Readonly<Record<string, unknown>>;
  /** Fields the schema derives (e.g. an internal name) that are not stored as inputs. */
  derivedInputs?: readonly string[];
  /** Fields whose change forces a replacement, given olds/news inputs. */
  replaces(olds: Record<string, unknown>, news: Record<string, unknown>): string[];
  deleteBeforeReplace(olds: Record<string, unknown>, news: Record<string, unknown>): boolean;
  /**
   * Plan `desired` against the host; `previous` is the old inputs on update,
   * and `desired` itself when a create finds the object its own lost create
   * made (see {@link creationRecord}). Throws KvmnetError when impossible.
   */
  plan(desired: I, snap: HostSnapshot, previous?: I): Plan;
  planDelete(props: I, snap: HostSnapshot): Plan;
  /** Problems (empty = good) comparing the host to `desired`. */
  verify(desired: I, snap: HostSnapshot): string[];
  /** Full outputs from inputs and the host, or undefined when the object is gone. */
  outputs(inputs: I, snap: HostSnapshot): Record<string, unknown> | undefined;
  /**
   * Outputs that describe the last apply rather than the object (PortForward's
   * `warnings`: "ip_forward is off", "no host subnet holds the destination"):
   * read keeps their stored value, so another object arriving or leaving on
   * the host (a NatNetwork turning ip_forward on) is not drift of this one.
   */
  keptOnRead?: readonly string[];
  /**
   * Extra framed sections (built with observe's `section()`) this kind reads
   * from `snap.sections`, e.g. sysfs for PCI devices. They run in every
   * observe and apply read-back of this kind, and only this kind.
   */
  observeExtra?: readonly Script[];
  /**
   * The files that recreate the object at boot through `backend` (never
   * "runtime"), from the inputs and stable facts of the host (not from what
   * this very plan changes). Kinds without it persist nothing.
   */
  persist?(desired: I, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet;
}

/** Where creates leave their records: one file per object, `<kind>.<name>`. */
export const CREATED_DIR = `${STATE_DIR}/created`;

/** JSON with object keys sorted, so equal values give equal text. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/**
 * The record a create leaves on the host: the object's id and a digest of the
 * inputs it was created from (the connection left out: it carries secrets,
 * and the record lives on that very host). The engine forgets a create whose
 * provider died before the result came back (killed, or the connection cut
 * while the host script ran to its end), and the next `up` creates again with
 * the same inputs. An object whose record names this id and these inputs was
 * made by this provider for this very resource, so that create takes it over
 * (plans it as an update from itself) instead of failing with a Conflict.
 * Anything else of that name is not provably ours: the kind's Conflict, or
 * `adopt`, decides. Updates leave the record as it is; delete removes it.
 */
export function creationRecord(spec: Pick<KindSpec<BaseInputs>, "kind">, inputs: BaseInputs, id: string): { path: string; text: string } {
  const { connection: _connection, ...rest } = inputs as BaseInputs & Record<string, unknown>;
  const digest = createHash("sha256").update(canonicalJson(rest)).digest("hex");
  return { path: `${CREATED_DIR}/${spec.kind}.${inputs.name}`, text: JSON.stringify({ id, inputs: `sha256:${digest}` }) };
}

/** Removes the record (and our directories once empty); nothing to undo, the object is going too. */
function forgetCreationStep(path: string) {
  return { description: `remove the creation record ${path}`, run: sh`rm -f ${path}; rmdir ${CREATED_DIR} ${STATE_DIR} /run/kvmnet 2>/dev/null; true` };
}

/** The persistence mode of inputs (kinds without the field persist nothing). */
function persistMode(i: BaseInputs): Persistence {
  return (i as { persistence?: Persistence }).persistence ?? "runtime";
}

/** What `desired` persists on this host, and through which backend. Throws when the mode cannot be met. */
function persistedSet<I extends BaseInputs>(spec: KindSpec<I>, desired: I, snap: HostSnapshot): { backend: Backend; set: PersistSet } {
  if (!spec.persist) return { backend: "runtime", set: { files: [] } };
  const backend = resolveBackend(persistMode(desired), snap, `${spec.kind} ${desired.name}`);
  return { backend, set: backend === "runtime" ? { files: [] } : spec.persist(desired, backend, snap) };
}

/** The kind's live plan with its persisted files brought in line after it. */
function planWithFiles<I extends BaseInputs>(spec: KindSpec<I>, desired: I, snap: HostSnapshot, previous?: I): { plan: Plan; backend: Backend; set: PersistSet } {
  const { backend, set } = persistedSet(spec, desired, snap);
  const plan = spec.plan(desired, snap, previous);
  return { plan: spec.persist ? withPersistence(plan, persistSteps(spec.kind, desired.name, set, snap)) : plan, backend, set };
}

/** The kind's delete plan, with every file the object persisted through removed. */
function planDeleteWithFiles<I extends BaseInputs>(spec: KindSpec<I>, props: I, snap: HostSnapshot): Plan {
  const planned = spec.planDelete(props, snap);
  const plan = spec.persist ? withPersistence(planned, persistSteps(spec.kind, props.name, { files: [] }, snap)) : planned;
  const record = `${CREATED_DIR}/${spec.kind}.${props.name}`;
  return snap.stateFiles[record] === undefined ? plan : { ...plan, steps: [...plan.steps, forgetCreationStep(record)] };
}

/**
 * Apply a create/update plan and judge the host after it: what `verify` finds
 * wrong, and persisted files that differ from `set` (after NetworkManager
 * settled, when the object has profiles).
 */
async function applyAndCheck<I extends BaseInputs>(
  spec: KindSpec<I>,
  host: Host,
  plan: Plan,
  desired: I,
  set: PersistSet,
  before: HostSnapshot,
): Promise<{ after: HostSnapshot; problems: string[] }> {
  const problemsIn = (h: HostSnapshot) => [...spec.verify(desired, h), ...(spec.persist ? persistDrift(spec.kind, desired.name, set, h) : [])];
  const applied = await apply(host, plan, spec.observeExtra, desired.connection);
  const after = await settled(
    () => observe(host, spec.observeExtra),
    applied,
    usesNetworkManager(spec.kind, desired.name, before, set),
    (h) => problemsIn(h).length === 0,
  );
  return { after, problems: problemsIn(after) };
}

/** Outputs plus where the object persists (kinds with `persist` only). */
function withPersistOutputs<I extends BaseInputs>(spec: KindSpec<I>, outs: Record<string, unknown>, backend: Backend, drift: string[]): Record<string, unknown> {
  if (!spec.persist) return outs;
  return { ...outs, persistedBy: backend, persistenceDrift: drift };
}

/** Engine bookkeeping keys (`__provider`) never reach schemas. */
function stripInternal(props: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(props ?? {})) if (!k.startsWith("__")) out[k] = v;
  return out;
}

/** Drop undefined members (the engine's Struct encoding cannot carry them). */
function plain<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/**
 * Parse inputs, or stored outputs (whose computed fields are dropped first).
 * New inputs reach create/update only once every value is known, so the
 * engine's unknown placeholder among them is refused (a program typed it);
 * stored state is read as it was written.
 */
function parseInputs<I>(spec: KindSpec<BaseInputs>, props: Record<string, unknown>, what: string, stored = false): I {
  const picked: Record<string, unknown> = {};
  for (const k of spec.inputKeys) if (props?.[k] !== undefined) picked[k] = props[k];
  const unknowns = stored ? "validateAround" : "refuse";
  const schema = stored ? (spec.storedSchema ?? spec.schema) : spec.schema;
  let { value, failures } = checkWith(schema, picked, unknowns);
  if (!value && stored && failures.every((f) => spec.computedInputs?.includes(f.property))) {
    for (const f of failures) delete picked[f.property];
    ({ value, failures } = checkWith(schema, picked, unknowns));
  }
  if (!value) {
    throw new KvmnetError({ kind: "InvalidArgument", message: `${what}: ${failures.map((f) => f.reason).join("; ")}` });
  }
  return value as I;
}

function idOf(spec: KindSpec<BaseInputs>, i: BaseInputs): string {
  return resourceId(spec.kind, i.connection, i.name);
}

/** Build the engine-facing provider for one kind. */
export function makeKindProvider<I extends BaseInputs>(spec: KindSpec<I>): KindProvider {
  const s = spec as unknown as KindSpec<BaseInputs>;
  return {
    async check(_olds, news) {
      const inputs = stripInternal(news);
      const { value, failures } = checkWith(spec.schema, inputs);
      // A kind that writes no boot-time configuration yet must not accept a promise to.
      const mode = inputs.persistence;
      if (!spec.persist && typeof mode === "string" && mode !== "runtime" && !containsUnknown(mode)) {
        failures.push({ property: "persistence", reason: `persistence: ${spec.kind} persists only "runtime" in this release (it is gone after a reboot); got "${mode}"` });
      }
      if (failures.length > 0) return { inputs, failures };
      // With unknowns (preview) the parse may have been partial: keep inputs as given.
      if (!value || containsUnknown(inputs)) return { inputs };
      const checked = plain(value) as Record<string, unknown>;
      for (const k of spec.derivedInputs ?? []) delete checked[k];
      return { inputs: checked };
    },

    async diff(_id, oldsRaw, newsRaw) {
      const olds = stripInternal(oldsRaw);
      const news = stripInternal(newsRaw);
      for (const [k, v] of Object.entries(spec.addedInputs ?? {})) {
        if (olds[k] === undefined) olds[k] = v;
        if (news[k] === undefined) news[k] = v;
      }
      const changed: string[] = [];
      for (const k of spec.inputKeys) {
        // Unless the kind says otherwise, an optional setting removed from the
        // program is left as the host has it.
        const removalCounts = spec.removalIsChange === true || (Array.isArray(spec.removalIsChange) && spec.removalIsChange.includes(k));
        if (news[k] === undefined && !removalCounts) continue;
        if (containsUnknown(news[k]) || !isDeepStrictEqual(olds[k], news[k])) changed.push(k);
      }
      const replaces = spec.replaces(olds, news).filter((k) => changed.includes(k));
      return {
        changes: changed.length > 0,
        replaces,
        // Never delete first with the unknown placeholder among the new inputs:
        // diff cannot tell a preview's unknown from a literal (#14), and during up
        // a literal would have the old object deleted before create refuses it.
        // Creating first, that refusal leaves the old object alone; in preview
        // only the displayed order differs, as up's diff sees known values.
        deleteBeforeReplace: replaces.length > 0 && !containsUnknown(news) && spec.deleteBeforeReplace(olds, news),
      };
    },

    async create(props) {
      const inputs = parseInputs<I>(s, props, `invalid ${spec.kind}`);
      const host = hostFor(inputs.connection);
      const snap = await observe(host, spec.observeExtra);
      const id = idOf(s, inputs);
      const record = creationRecord(s, inputs, id);
      // Our own lost create (see creationRecord): converge, as an update from these very inputs.
      const ours = snap.stateFiles[record.path]?.trim() === record.text;
      const planned = planWithFiles(spec, inputs, snap, ours ? inputs : undefined);
      const { backend, set } = planned;
      const plan: Plan = ours
        ? planned.plan
        : {
            ...planned.plan,
            steps: [
              ...planned.plan.steps,
              {
                description: `record that ${spec.kind} ${inputs.name} was created for ${id}`,
                run: sh`mkdir -p ${CREATED_DIR} && ${writeFile(record.path, record.text)}`,
                undo: forgetCreationStep(record.path).run,
              },
            ],
          };
      const { after, problems } = await applyAndCheck(spec, host, plan, inputs, set, snap);
      if (problems.length > 0) {
        // The SDK contract: a failed create leaves nothing behind.
        await apply(host, planDeleteWithFiles(spec, inputs, after), spec.observeExtra, inputs.connection).catch(() => undefined);
        throw new KvmnetError({ kind: "Verification", message: `Verification failure: ${problems.join("; ")}`, host: host.label, hint: "the partial change was removed" });
      }
      const outs = spec.outputs(inputs, after);
      if (!outs) throw new KvmnetError({ kind: "Bug", message: `${spec.kind} ${inputs.name} verified but not found in the snapshot`, host: host.label });
      return { id, outs: plain(withPersistOutputs(spec, outs, backend, [])) };
    },

    async read(id, props) {
      const inputs = parseInputs<I>(s, props, `stored state of ${id} is not valid`, true);
      const host = hostFor(inputs.connection);
      const snap = await observe(host, spec.observeExtra);
      const live = spec.outputs(inputs, snap);
      if (!live) return { id: "", props: {} };
      // Persisted files that differ from what the inputs render are drift too:
      // the object would not come back (or come back different) after a reboot.
      let backend: Backend = "runtime";
      let drift: string[] = [];
      try {
        const p = persistedSet(spec, inputs, snap);
        backend = p.backend;
        if (spec.persist) drift = persistDrift(spec.kind, inputs.name, p.set, snap);
      } catch (e) {
        drift = [shortMessageOf(e)];
      }
      const outs = withPersistOutputs(spec, live, backend, drift);
      if (drift.length > 0) outs.persistence = "runtime";
      for (const k of spec.keptOnRead ?? []) if (props?.[k] !== undefined) outs[k] = props[k];
      const current = plain(outs);
      // Computed inputs are left out: the stored value may be the host's pick, not the user's.
      const refreshedInputs: Record<string, unknown> = {};
      for (const k of spec.inputKeys) if (k in current && !spec.computedInputs?.includes(k)) refreshedInputs[k] = current[k];
      return { id, props: current, inputs: refreshedInputs };
    },

    async update(_id, oldsRaw, newsRaw) {
      const olds = parseInputs<I>(s, oldsRaw, "stored state is not valid", true);
      const news = parseInputs<I>(s, newsRaw, `invalid ${spec.kind}`);
      const host = hostFor(news.connection);
      const snap = await observe(host, spec.observeExtra);
      const { plan, backend, set } = planWithFiles(spec, news, snap, olds);
      const { after, problems } = await applyAndCheck(spec, host, plan, news, set, snap);
      if (problems.length > 0) {
        // A failed update leaves the old state: plan back to the old inputs.
        let rolledBack = "rolled back to the previous settings";
        try {
          await apply(host, planWithFiles(spec, olds, after, news).plan, spec.observeExtra, news.connection);
        } catch (e) {
          rolledBack = `rolling back failed too: ${shortMessageOf(e)}; run pulumi refresh`;
        }
        throw new KvmnetError({ kind: "Verification", message: `Verification failure: ${problems.join("; ")}`, host: host.label, hint: rolledBack });
      }
      const outs = spec.outputs(news, after);
      if (!outs) throw new KvmnetError({ kind: "Bug", message: `${spec.kind} ${news.name} verified but not found in the snapshot`, host: host.label });
      return { outs: plain(withPersistOutputs(spec, outs, backend, [])) };
    },

    async delete(_id, props) {
      const inputs = parseInputs<I>(s, props, "stored state is not valid", true);
      const host = hostFor(inputs.connection);
      const snap = await observe(host, spec.observeExtra);
      const plan = planDeleteWithFiles(spec, inputs, snap);
      if (plan.steps.length === 0) return;
      const gone = (h: HostSnapshot) => spec.outputs(inputs, h) === undefined;
      const nm = usesNetworkManager(spec.kind, inputs.name, snap);
      const look = () => observe(host, spec.observeExtra);
      let after = await settled(look, await apply(host, plan, spec.observeExtra, inputs.connection), nm, gone);
      // NetworkManager brought it back and kept it: with its profiles gone now,
      // another pass removes what is left. NetworkManager may still be taking
      // it down itself meanwhile, so a pass that fails counts only if the
      // object is still there afterwards.
      for (let pass = 0; nm && !gone(after) && pass < NM_DELETE_PASSES; pass++) {
        const again = planDeleteWithFiles(spec, inputs, after);
        if (again.steps.length === 0) break;
        let failed: { error: unknown } | undefined;
        try {
          after = await apply(host, again, spec.observeExtra, inputs.connection);
        } catch (e) {
          failed = { error: e };
          after = await look();
        }
        after = await settled(look, after, true, gone);
        if (failed && !gone(after)) throw failed.error;
      }
      if (!gone(after)) throw new KvmnetError({ kind: "Verification", message: `Verification failure: ${spec.kind} ${inputs.name} still exists after delete`, host: host.label });
    },
  };
}

/**
 * The glue between the engine's dynamic-provider calls and a resource kind:
 * check (zod → failures), diff (pure), and create/read/update/delete with the
 * observe → plan → render → apply → verify flow. Kinds supply the pieces.
 *
 * The methods' shapes match `pulumi.dynamic.ResourceProvider`; nothing from
 * @pulumi/pulumi is imported here (provider code runs in the dynamic-provider
 * process and must not depend on the program's copy of the SDK).
 */
import { isDeepStrictEqual } from "util";
import { apply, observe } from "../apply";
import { KvmnetError, shortMessageOf } from "../errors";
import { Host, hostFor } from "../host";
import { resourceId } from "../identity";
import type { HostSnapshot } from "../observe";
import { Backend, persistDrift, PersistSet } from "../persist";
import { NM_DELETE_PASSES, settled, usesNetworkManager } from "../persist/networkManager";
import { Plan } from "../render";
import type { Script } from "../shell";
import { creationRecord, recordCreationStep } from "./creationRecord";
import type { BaseInputs, KindProvider, KindSpec } from "./kind";
import { libvirtVerify, outputsOf, REMOVAL_IS_CHANGE, sectionsFor, withLibvirt, withLibvirtDelete } from "./attached";
import { persistedSet, planDeleteWithFiles, planWithFiles, withPersistOutputs } from "./persisted";
import { checkWith, containsUnknown } from "../validate";

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
  extra: readonly Script[],
): Promise<{ after: HostSnapshot; problems: string[] }> {
  const problemsIn = (h: HostSnapshot) => [...spec.verify(desired, h), ...libvirtVerify(spec, desired, h), ...(spec.persist ? persistDrift(spec.kind, desired.name, set, h) : [])];
  const applied = await apply(host, plan, extra, desired.connection);
  const after = await settled(
    () => observe(host, extra),
    applied,
    usesNetworkManager(spec.kind, desired.name, before, set),
    (h) => problemsIn(h).length === 0,
  );
  return { after, problems: problemsIn(after) };
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

/** The kind's plan with its persisted files and its libvirt registration brought in line after it. */
function planFor<I extends BaseInputs>(spec: KindSpec<I>, desired: I, snap: HostSnapshot, previous?: I): { plan: Plan; backend: Backend; set: PersistSet } {
  return withLibvirt(spec, () => planWithFiles(spec, desired, snap, previous), desired, snap, previous);
}

/** The kind's delete plan, after the libvirt registration is removed. */
function planDeleteFor<I extends BaseInputs>(spec: KindSpec<I>, props: I, snap: HostSnapshot): Plan {
  return withLibvirtDelete(spec, planDeleteWithFiles(spec, props, snap), props, snap);
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
        const removalCounts =
          spec.removalIsChange === true || (Array.isArray(spec.removalIsChange) && spec.removalIsChange.includes(k)) || (REMOVAL_IS_CHANGE as readonly string[]).includes(k);
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
      const extra = sectionsFor(spec, inputs);
      const snap = await observe(host, extra);
      const id = idOf(s, inputs);
      const record = creationRecord(s, inputs, id);
      // Our own lost create (see creationRecord): converge, as an update from these very inputs.
      const ours = snap.stateFiles[record.path]?.trim() === record.text;
      const planned = planFor(spec, inputs, snap, ours ? inputs : undefined);
      const { backend, set } = planned;
      const plan: Plan = ours ? planned.plan : { ...planned.plan, steps: [...planned.plan.steps, recordCreationStep(record, `${spec.kind} ${inputs.name}`, id)] };
      const { after, problems } = await applyAndCheck(spec, host, plan, inputs, set, snap, extra);
      if (problems.length > 0) {
        // The SDK contract: a failed create leaves nothing behind.
        await apply(host, planDeleteFor(spec, inputs, after), extra, inputs.connection).catch(() => undefined);
        throw new KvmnetError({ kind: "Verification", message: `Verification failure: ${problems.join("; ")}`, host: host.label, hint: "the partial change was removed" });
      }
      const outs = outputsOf(spec, inputs, after);
      if (!outs) throw new KvmnetError({ kind: "Bug", message: `${spec.kind} ${inputs.name} verified but not found in the snapshot`, host: host.label });
      return { id, outs: plain(withPersistOutputs(spec, outs, backend, [])) };
    },

    async read(id, props) {
      const inputs = parseInputs<I>(s, props, `stored state of ${id} is not valid`, true);
      const host = hostFor(inputs.connection);
      const snap = await observe(host, sectionsFor(spec, inputs));
      const live = outputsOf(spec, inputs, snap);
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
      const extra = sectionsFor(spec, news, olds);
      const snap = await observe(host, extra);
      const { plan, backend, set } = planFor(spec, news, snap, olds);
      const { after, problems } = await applyAndCheck(spec, host, plan, news, set, snap, extra);
      if (problems.length > 0) {
        // A failed update leaves the old state: plan back to the old inputs.
        let rolledBack = "rolled back to the previous settings";
        try {
          await apply(host, planFor(spec, olds, after, news).plan, extra, news.connection);
        } catch (e) {
          rolledBack = `rolling back failed too: ${shortMessageOf(e)}; run pulumi refresh`;
        }
        throw new KvmnetError({ kind: "Verification", message: `Verification failure: ${problems.join("; ")}`, host: host.label, hint: rolledBack });
      }
      const outs = outputsOf(spec, news, after);
      if (!outs) throw new KvmnetError({ kind: "Bug", message: `${spec.kind} ${news.name} verified but not found in the snapshot`, host: host.label });
      return { outs: plain(withPersistOutputs(spec, outs, backend, [])) };
    },

    async delete(_id, props) {
      const inputs = parseInputs<I>(s, props, "stored state is not valid", true);
      const host = hostFor(inputs.connection);
      const extra = sectionsFor(spec, inputs);
      const snap = await observe(host, extra);
      const plan = planDeleteFor(spec, inputs, snap);
      if (plan.steps.length === 0) return;
      const gone = (h: HostSnapshot) => spec.outputs(inputs, h) === undefined;
      const nm = usesNetworkManager(spec.kind, inputs.name, snap);
      const look = () => observe(host, extra);
      let after = await settled(look, await apply(host, plan, extra, inputs.connection), nm, gone);
      // NetworkManager brought it back and kept it: with its profiles gone now,
      // another pass removes what is left. NetworkManager may still be taking
      // it down itself meanwhile, so a pass that fails counts only if the
      // object is still there afterwards.
      for (let pass = 0; nm && !gone(after) && pass < NM_DELETE_PASSES; pass++) {
        const again = planDeleteFor(spec, inputs, after);
        if (again.steps.length === 0) break;
        let failed: { error: unknown } | undefined;
        try {
          after = await apply(host, again, extra, inputs.connection);
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

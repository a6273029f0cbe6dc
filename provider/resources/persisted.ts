/**
 * A kind's plans and outputs with its persisted files brought in: which
 * backend the inputs persist through on this host, the files it wants, and
 * their removal on delete.
 */
import type { HostSnapshot } from "../observe";
import { Backend, Persistence, PersistSet, resolveBackend, withPersistFiles } from "../persist";
import type { Plan } from "../render";
import { CREATED_DIR, forgetCreationStep } from "./creationRecord";
import type { BaseInputs, KindSpec } from "./kind";

/** The persistence mode of inputs (kinds without the field persist nothing). */
export function persistMode(i: BaseInputs): Persistence {
  return (i as { persistence?: Persistence }).persistence ?? "runtime";
}

/** What `desired` persists on this host, and through which backend. Throws when the mode cannot be met. */
export function persistedSet<I extends BaseInputs>(spec: KindSpec<I>, desired: I, snap: HostSnapshot): { backend: Backend; set: PersistSet } {
  if (!spec.persist) return { backend: "runtime", set: { files: [] } };
  const backend = resolveBackend(persistMode(desired), snap, `${spec.kind} ${desired.name}`);
  return { backend, set: backend === "runtime" ? { files: [] } : spec.persist(desired, backend, snap) };
}

/** The kind's live plan with its persisted files brought in line after it. */
export function planWithFiles<I extends BaseInputs>(spec: KindSpec<I>, desired: I, snap: HostSnapshot, previous?: I): { plan: Plan; backend: Backend; set: PersistSet } {
  const { backend, set } = persistedSet(spec, desired, snap);
  const plan = spec.plan(desired, snap, previous);
  return { plan: spec.persist ? withPersistFiles(plan, spec.kind, desired.name, set, snap) : plan, backend, set };
}

/** The kind's delete plan, with every file the object persisted through removed. */
export function planDeleteWithFiles<I extends BaseInputs>(spec: KindSpec<I>, props: I, snap: HostSnapshot): Plan {
  const planned = spec.planDelete(props, snap);
  const plan = spec.persist ? withPersistFiles(planned, spec.kind, props.name, { files: [] }, snap) : planned;
  const record = `${CREATED_DIR}/${spec.kind}.${props.name}`;
  return snap.stateFiles[record] === undefined ? plan : { ...plan, steps: [...plan.steps, forgetCreationStep(record)] };
}

/** Outputs plus where the object persists (kinds with `persist` only). */
export function withPersistOutputs<I extends BaseInputs>(spec: KindSpec<I>, outs: Record<string, unknown>, backend: Backend, drift: string[]): Record<string, unknown> {
  if (!spec.persist) return outs;
  return { ...outs, persistedBy: backend, persistenceDrift: drift };
}

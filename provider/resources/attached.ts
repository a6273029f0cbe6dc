/**
 * What every kind a VM attaches to gets from the lifecycle, written once: the
 * attach outputs (`libvirtInterfaceXml`, `qemuNetdevArgs`) and the optional
 * libvirt registration (`libvirt` input: its observe section, its steps after
 * a create or update and before a delete, its verification and its output).
 */
import { AttachPoint, bridgeNetdevArgs, libvirtInterfaceXml, NicModel } from "../attach";
import { LibvirtSettings, libvirtOutput, libvirtProblems, libvirtSection, planLibvirt, planLibvirtDelete } from "../libvirt";
import type { HostSnapshot } from "../observe";
import type { Plan } from "../render";
import type { Script } from "../shell";
import type { BaseInputs, KindSpec } from "./kind";

/** The inputs the attach pieces read (schemas of attachable kinds have them). */
interface Attachable {
  libvirt?: LibvirtSettings;
  model?: NicModel;
}
const settingsOf = (i: BaseInputs | undefined) => (i as Attachable | undefined)?.libvirt;

/**
 * An unset `libvirt` means "not registered": unlike most optional settings
 * (left as the host has them), removing it from the program undefines the network.
 */
export const REMOVAL_IS_CHANGE = ["libvirt"] as const;

/** The kind's observe sections plus one per libvirt network the inputs name (old and new on update). */
export function sectionsFor<I extends BaseInputs>(spec: KindSpec<I>, ...inputs: (I | undefined)[]): readonly Script[] {
  const networks = [...new Set(inputs.map((i) => settingsOf(i)?.network).filter((n): n is string => n !== undefined))];
  if (networks.length === 0) return spec.observeExtra ?? [];
  return [...(spec.observeExtra ?? []), ...networks.sort().map(libvirtSection)];
}

function pointOf<I extends BaseInputs>(spec: KindSpec<I>, i: I): AttachPoint | undefined {
  return spec.attachPoint?.(i);
}

/**
 * The kind's plan (`kindPlan`) with the registration brought from `previous`
 * to `desired` after its steps. The registration is planned first: when
 * libvirt refuses (no libvirtd, a name that is someone else's), that is the
 * error, not what the kind would say about the bridge libvirt's network holds.
 */
export function withLibvirt<I extends BaseInputs, P extends { plan: Plan }>(spec: KindSpec<I>, kindPlan: () => P, desired: I, snap: HostSnapshot, previous?: I): P {
  const at = pointOf(spec, desired);
  if (!at || (!settingsOf(desired) && !settingsOf(previous))) return kindPlan();
  const l = planLibvirt({ kind: spec.kind, name: desired.name }, settingsOf(desired), at, previous === desired ? undefined : settingsOf(previous), snap);
  const p = kindPlan();
  return { ...p, plan: { ...p.plan, guards: [...p.plan.guards, ...l.guards], steps: [...p.plan.steps, ...l.steps] } };
}

/** The delete `plan` with our registration removed first (libvirt's network names the bridge about to go). */
export function withLibvirtDelete<I extends BaseInputs>(spec: KindSpec<I>, plan: Plan, props: I, snap: HostSnapshot): Plan {
  const at = pointOf(spec, props);
  if (!at || !settingsOf(props)) return plan;
  const steps = planLibvirtDelete({ kind: spec.kind, name: props.name }, settingsOf(props), at, snap);
  return steps.length === 0 ? plan : { ...plan, steps: [...steps, ...plan.steps] };
}

/** What is wrong with the registration on the host (nothing when none is asked for). */
export function libvirtVerify<I extends BaseInputs>(spec: KindSpec<I>, desired: I, snap: HostSnapshot): string[] {
  const at = pointOf(spec, desired);
  const want = settingsOf(desired);
  return at && want ? libvirtProblems({ kind: spec.kind, name: desired.name }, want, at, snap) : [];
}

/**
 * The kind's outputs plus the attach snippets and the registration as the
 * host has it (absent when it is missing or changed: refresh shows drift, and
 * the next update repairs it).
 */
export function outputsOf<I extends BaseInputs>(spec: KindSpec<I>, inputs: I, snap: HostSnapshot): Record<string, unknown> | undefined {
  const outs = spec.outputs(inputs, snap);
  const at = pointOf(spec, inputs);
  if (!outs || !at) return outs;
  const want = settingsOf(inputs);
  const registered = want ? libvirtOutput({ kind: spec.kind, name: inputs.name }, want, at, snap) : undefined;
  const model = (inputs as Attachable).model ?? "virtio-net-pci";
  const extra: Record<string, unknown> = { libvirt: registered, libvirtInterfaceXml: libvirtInterfaceXml(at, model, want?.network) };
  // A tap renders its own (`-netdev tap`, with its flags).
  if (outs.qemuNetdevArgs === undefined) extra.qemuNetdevArgs = bridgeNetdevArgs(at, model);
  return { ...outs, ...extra };
}

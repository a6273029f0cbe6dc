/**
 * What a resource kind is to the lifecycle: the six calls the engine makes
 * (KindProvider), and what a kind supplies to get them (KindSpec).
 */
import type { z } from "zod";
import type { AttachPoint } from "../attach";
import type { ConnectionInput } from "../host";
import type { HostSnapshot } from "../observe";
import type { Backend, PersistSet } from "../persist";
import type { Plan } from "../render";
import type { Script } from "../shell";
import type { CheckFailure } from "../validate";

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
  /**
   * Where a VM attaches to the object. Kinds with it get the attach outputs
   * (`libvirtInterfaceXml`, `qemuNetdevArgs`) and, when their schema has a
   * `libvirt` field, the libvirt registration (resources/attached.ts).
   */
  attachPoint?(inputs: I): AttachPoint;
}

/**
 * Creation records: how a create the engine lost is told from anything else
 * of the same name on the host (see {@link creationRecord}).
 */
import { createHash } from "crypto";
import { STATE_DIR } from "../observe";
import { sh, writeFile } from "../shell";
import type { BaseInputs, KindSpec } from "./kind";

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
export function forgetCreationStep(path: string) {
  return { description: `remove the creation record ${path}`, run: sh`rm -f ${path}; rmdir ${CREATED_DIR} ${STATE_DIR} /run/kvmnet 2>/dev/null; true` };
}

/** The create's last step: leave its record (undone with the steps before it when a later check fails). */
export function recordCreationStep(record: { path: string; text: string }, what: string, id: string) {
  return {
    description: `record that ${what} was created for ${id}`,
    run: sh`mkdir -p ${CREATED_DIR} && ${writeFile(record.path, record.text)}`,
    undo: forgetCreationStep(record.path).run,
  };
}

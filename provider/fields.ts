/**
 * A kind's input fields, read from its zod schema: the one place a field is
 * declared. Each field of a schema's object carries its documentation as zod
 * metadata, set last on the field (after `.optional()` / `.default()`):
 *
 *   mtu: z.number().int().min(68).max(65535).optional().describe("MTU of the bridge device, 68–65535.")
 *     .meta({ docDefault: "kernel's", onChange: "update" }),
 *
 * `description` (from `.describe()`) is the field's text in the SDK's JSDoc and
 * the README's tables; `docDefault` and `onChange` fill the README's Default
 * and On change columns (defaults: the schema's `.default()` value, and
 * "update"). scripts/docs.ts writes both from here, and its unit test fails on
 * any drift.
 */
import { z } from "zod";

/** The object schema inside `S`: through the pipes that `.transform()` makes, and `z.lazy`. */
export type ObjectIn<S> = S extends z.ZodObject ? S : S extends z.ZodPipe<infer A, z.ZodType> ? ObjectIn<A> : S extends z.ZodLazy<infer T> ? ObjectIn<T> : never;

/** The name of an input field of `S`. */
export type InputKey<S> = keyof ObjectIn<S>["shape"] & string;

/** The object schema inside `schema` (see {@link ObjectIn}); throws for any other shape. */
export function objectOf<S extends z.ZodType>(schema: S): ObjectIn<S> {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodObject) return s as ObjectIn<S>;
    if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else if (s instanceof z.ZodLazy) s = s.unwrap() as z.ZodType;
    else throw new Error(`objectOf: a ${s._zod.def.type} schema has no object inside`);
  }
}

/** The input field names of `schema`, in declaration order: what diff compares and state keeps. */
export function inputKeysOf<S extends z.ZodType>(schema: S): readonly InputKey<S>[] {
  return Object.keys(objectOf(schema).shape);
}

/** The metadata keys a field may carry (anything else is a typo). */
export const FIELD_META_KEYS = ["description", "docDefault", "onChange"] as const;

/** One input field as its schema documents it. */
export interface FieldDoc {
  key: string;
  description?: string;
  /** Whether a program may leave it out (optional, or with a default). */
  optional: boolean;
  /** The README's Default column, markdown. */
  defaultText: string;
  /** The README's On change column, markdown. */
  onChange: string;
  /** Metadata keys outside {@link FIELD_META_KEYS}. */
  unknownMeta: string[];
}

/** How a schema default reads in the README: `false`, `60`, `"runtime"`, `[]`. */
function defaultTextOf(field: z.ZodType): string | undefined {
  if (!(field instanceof z.ZodDefault)) return undefined;
  return `\`${JSON.stringify(field._zod.def.defaultValue)}\``;
}

/** Every field of `schema`'s object with its documentation, in declaration order. */
export function fieldDocs(schema: z.ZodType): FieldDoc[] {
  return Object.entries((objectOf(schema) as z.ZodObject).shape as Record<string, z.ZodType>).map(([key, field]) => {
    const meta = (field.meta() ?? {}) as Record<string, unknown>;
    const text = (k: string) => (typeof meta[k] === "string" ? meta[k] : undefined);
    return {
      key,
      description: text("description"),
      optional: field._zod.optin !== undefined,
      defaultText: text("docDefault") ?? defaultTextOf(field) ?? "—",
      onChange: text("onChange") ?? "update",
      unknownMeta: Object.keys(meta).filter((k) => !(FIELD_META_KEYS as readonly string[]).includes(k)),
    };
  });
}

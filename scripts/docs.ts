/**
 * `npm run docs`: the SDK's JSDoc of every input field and the README's
 * argument tables, written from the kinds' zod schemas (provider/fields.ts):
 * a field's description, default and what changing it does are declared
 * there, once.
 *
 * It writes what it can (a JSDoc comment, a table row) and lists what it
 * cannot: a field the SDK's interface lacks or has in excess, or declares
 * optional when the schema requires it (its TypeScript type is written by
 * hand), a field without a description, a class or README section that does
 * not name its kind's type token and id. test/unit/scripts/docs.test.ts fails
 * on either, so the SDK and the README cannot drift from the schemas.
 */
import * as fs from "fs";
import * as path from "path";
import type { z } from "zod";
import { FieldDoc, fieldDocs, inputKeysOf } from "../provider/fields";
import { connectionSchema } from "../provider/host/connection";
import { libvirtSettings } from "../provider/libvirt";
import { KIND_NAMES, KindName, KINDS, typeToken } from "../provider/identity";
import { INPUT_SCHEMAS } from "../provider/resources/inputs";
import { natNetworkSettingsSchemas } from "../provider/resources/natNetwork/schema";
import { classDoc, classOutputs, interfaceMembers, parseSource, REPO, sdkFile } from "./sdkSource";

/** The README, whose argument tables are written here. */
export const README = "README.md";

/** An SDK interface that follows a zod object, and the README table that documents it, if any. */
export interface DocTarget {
  schema: z.ZodType;
  file: string;
  iface: string;
  /** The README table's name in its markers; its columns: with "On change" for a kind's inputs. */
  table?: { name: string; columns: "inputs" | "connection" };
}

/** Every documented declaration: the connection, each kind's Args (with its README table), and NatNetwork's dhcp and dns objects. */
export const TARGETS: readonly DocTarget[] = [
  { schema: connectionSchema, file: sdkFile("types"), iface: "Connection", table: { name: "Connection", columns: "connection" } },
  ...KIND_NAMES.map((k) => ({ schema: INPUT_SCHEMAS[k], file: sdkFile(k), iface: `${KINDS[k].type}Args`, table: { name: KINDS[k].type, columns: "inputs" as const } })),
  { schema: natNetworkSettingsSchemas.dhcp, file: sdkFile("natNetwork"), iface: "NatNetworkDhcp" },
  { schema: natNetworkSettingsSchemas.dhcpHost, file: sdkFile("natNetwork"), iface: "NatNetworkDhcpHost" },
  { schema: natNetworkSettingsSchemas.dns, file: sdkFile("natNetwork"), iface: "NatNetworkDns" },
  { schema: natNetworkSettingsSchemas.dnsHost, file: sdkFile("natNetwork"), iface: "NatNetworkDnsHost" },
  { schema: libvirtSettings, file: sdkFile("types"), iface: "LibvirtRegistration" },
];

export interface DocsResult {
  /** The text of every file read, as the generator would leave it. */
  files: Map<string, string>;
  /** What differs from the schemas and the generator rewrites. */
  drift: string[];
  /** What differs and must be fixed by hand. */
  problems: string[];
}

const readRepoFile = (file: string) => fs.readFileSync(path.join(REPO, file), "utf8");

const squash = (s: string) => s.replace(/\s+/g, " ").trim();

/** A field's JSDoc text: the description, then its default and what a change does, README links reduced to their text. */
export function jsdocTextOf(doc: FieldDoc, withChange: boolean): string {
  const parts = [doc.description ?? ""];
  if (doc.defaultText !== "—") parts.push(`Default: ${doc.defaultText}.`);
  if (withChange && doc.onChange !== "update") parts.push(`On change: ${doc.onChange}.`);
  return squash(parts.join(" ").replace(/\[([^\]]+)\]\(#[^)]*\)/g, "$1"));
}

/** Words of `text` in lines of at most `width` characters (a longer word stands alone). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return line ? [...lines, line] : lines;
}

/** A JSDoc comment holding `text`, starting where `/**` goes, for a member indented by `indent`: one line when it fits. */
export function formatJsdoc(text: string, indent: string): string {
  const safe = text.replace(/\*\//g, "*\\/");
  const one = `/** ${safe} */`;
  if (indent.length + one.length <= 150) return one;
  return ["/**", ...wrap(safe, 100 - indent.length - 3).map((l) => `${indent} * ${l}`), `${indent} */`].join("\n");
}

const cell = (s: string) => s.replace(/\|/g, "\\|");

/** The table's lines, header included. */
export function tableLines(docs: FieldDoc[], columns: "inputs" | "connection"): string[] {
  const header = columns === "inputs" ? ["| Input | Default | Meaning | On change |", "| --- | --- | --- | --- |"] : ["| Field | Default | Meaning |", "| --- | --- | --- |"];
  return [...header, ...docs.map((d) => `| \`${d.key}\` | ${cell(d.defaultText)} | ${cell(d.description ?? "")} |${columns === "inputs" ? ` ${cell(d.onChange)} |` : ""}`)];
}

const startMarker = (name: string) => `<!-- fields:${name} (written from the schema by npm run docs: edit the schema, not this table) -->`;
const endMarker = (name: string) => `<!-- /fields:${name} -->`;

interface Edit {
  start: number;
  end: number;
  text: string;
}

/** `text` with `edits` (ranges of the original text, not overlapping) applied. */
function applyEdits(text: string, edits: Edit[]): string {
  return [...edits].sort((a, b) => b.start - a.start).reduce((t, e) => t.slice(0, e.start) + e.text + t.slice(e.end), text);
}

/** The SDK interface of `t` against its schema: JSDoc edits for what differs, and what cannot be edited. */
function checkInterface(t: DocTarget, text: string, docs: FieldDoc[], drift: string[], problems: string[]): Edit[] {
  const members = interfaceMembers(parseSource(t.file, text), t.iface);
  if (!members) {
    problems.push(`${t.file}: no interface ${t.iface}`);
    return [];
  }
  const where = `${t.file} ${t.iface}`;
  const byName = new Map(members.map((m) => [m.name, m]));
  for (const m of members) if (!docs.some((d) => d.key === m.name)) problems.push(`${where}.${m.name}: the schema has no such field`);
  const edits: Edit[] = [];
  for (const d of docs) {
    const m = byName.get(d.key);
    if (!m) {
      problems.push(`${where} lacks ${d.key} (declare it by hand: its type is not generated)`);
      continue;
    }
    if (m.optional !== d.optional) problems.push(`${where}.${d.key}: ${d.optional ? "optional" : "required"} in the schema, ${m.optional ? "optional" : "required"} here`);
    const want = jsdocTextOf(d, t.table?.columns === "inputs");
    if (squash(m.doc ?? "") === want) continue;
    drift.push(`${where}.${d.key}: ${m.doc === undefined ? "no JSDoc" : "the JSDoc is not the schema's description"}`);
    edits.push({ start: m.docStart, end: m.docEnd, text: m.doc === undefined ? `${formatJsdoc(want, m.indent)}\n${m.indent}` : formatJsdoc(want, m.indent) });
  }
  return edits;
}

/** The README with the table of `t` written from `docs`. */
function writeTable(t: DocTarget & { table: NonNullable<DocTarget["table"]> }, readme: string, docs: FieldDoc[], drift: string[], problems: string[]): string {
  const lines = readme.split("\n");
  const start = lines.findIndex((l) => l.startsWith(`<!-- fields:${t.table.name} `));
  const end = lines.indexOf(endMarker(t.table.name));
  if (start < 0 || end < start) {
    problems.push(`${README}: no table for ${t.table.name} between ${startMarker(t.table.name)} and ${endMarker(t.table.name)}`);
    return readme;
  }
  const want = tableLines(docs, t.table.columns);
  const rowKey = (l: string) => /^\| `(\w+)` \|/.exec(l)?.[1];
  const have = new Map(lines.slice(start + 1, end).flatMap((l) => (rowKey(l) ? [[rowKey(l), l] as const] : [])));
  for (const row of want.slice(2)) {
    const key = rowKey(row) as string;
    if (!have.has(key)) drift.push(`${README} ${t.table.name} table: no row for ${key}`);
    else if (have.get(key) !== row) drift.push(`${README} ${t.table.name} table: the row for ${key} is not the schema's`);
  }
  for (const key of have.keys()) if (!docs.some((d) => d.key === key)) drift.push(`${README} ${t.table.name} table: a row for ${key}, which the schema does not have`);
  const block = [startMarker(t.table.name), ...want];
  if (lines.slice(start, end).join("\n") !== block.join("\n") && !drift.some((d) => d.startsWith(`${README} ${t.table.name} table`))) {
    drift.push(`${README} ${t.table.name} table: its header or marker is not as written`);
  }
  return [...lines.slice(0, start), ...block, ...lines.slice(end)].join("\n");
}

/** The README section of a kind: from its `## <Type>` heading to the next `## `. */
function readmeSection(readme: string, heading: string): string | undefined {
  const lines = readme.split("\n");
  const start = lines.indexOf(`## ${heading}`);
  if (start < 0) return undefined;
  const next = lines.findIndex((l, i) => i > start && l.startsWith("## "));
  return lines.slice(start, next < 0 ? undefined : next).join("\n");
}

/** Does each kind's class and README section name its type token and id, and its computed outputs? */
function checkKind(kind: KindName, sdkText: string, readme: string, problems: string[]): void {
  const { type, idKind } = KINDS[kind];
  const token = typeToken(kind);
  const id = `<host>/${idKind}/`;
  const file = sdkFile(kind);
  const sf = parseSource(file, sdkText);
  const doc = squash(classDoc(sf, type) ?? "");
  for (const must of [token, id]) if (!doc.includes(must)) problems.push(`${file}: the JSDoc of class ${type} does not name ${must}`);
  const section = readmeSection(readme, type);
  if (!section) {
    problems.push(`${README}: no section "## ${type}"`);
    return;
  }
  for (const must of [token, id]) if (!squash(section).includes(must)) problems.push(`${README} ## ${type}: does not name ${must}`);
  const inputs: readonly string[] = inputKeysOf(INPUT_SCHEMAS[kind]);
  const persistence = readmeSection(readme, "Persistence") ?? "";
  for (const o of classOutputs(sf, type) ?? []) {
    if (!inputs.includes(o.name) && !section.includes(`\`${o.name}\``) && !persistence.includes(`\`${o.name}\``)) {
      problems.push(`${README} ## ${type}: does not name the output \`${o.name}\` (nor does ## Persistence)`);
    }
  }
}

/** The SDK and the README as the schemas have them, with what differed. */
export function renderDocs(read: (file: string) => string = readRepoFile): DocsResult {
  const originals = new Map<string, string>();
  const textOf = (file: string) => {
    if (!originals.has(file)) originals.set(file, read(file));
    return originals.get(file) as string;
  };
  const drift: string[] = [];
  const problems: string[] = [];
  const edits = new Map<string, Edit[]>();
  let readme = textOf(README);
  for (const t of TARGETS) {
    const docs = fieldDocs(t.schema);
    for (const d of docs) {
      if (!d.description) problems.push(`the schema of ${t.iface} has no description for ${d.key} (.describe() last on the field)`);
      if (d.unknownMeta.length > 0) problems.push(`the schema of ${t.iface}: ${d.key} carries unknown metadata ${d.unknownMeta.join(", ")}`);
    }
    edits.set(t.file, [...(edits.get(t.file) ?? []), ...checkInterface(t, textOf(t.file), docs, drift, problems)]);
    if (t.table) readme = writeTable({ ...t, table: t.table }, readme, docs, drift, problems);
  }
  for (const k of KIND_NAMES) checkKind(k, textOf(sdkFile(k)), readme, problems);
  const files = new Map([...originals].map(([f, text]) => [f, f === README ? readme : applyEdits(text, edits.get(f) ?? [])]));
  return { files, drift, problems };
}

if (require.main === module) {
  const { files, drift, problems } = renderDocs();
  for (const [file, text] of files) if (text !== readRepoFile(file)) fs.writeFileSync(path.join(REPO, file), text);
  for (const d of drift) console.log(`written: ${d}`);
  for (const p of problems) console.error(`to fix by hand: ${p}`);
  if (drift.length === 0 && problems.length === 0) console.log("docs: the SDK and the README follow the schemas");
  process.exitCode = problems.length > 0 ? 1 : 0;
}

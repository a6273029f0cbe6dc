/**
 * The SDK's declarations as its source has them (TypeScript's parser): the
 * members of an Args interface with their JSDoc, a class's declared outputs and
 * its own JSDoc. scripts/docs.ts and the SDK's unit tests read the SDK through
 * this, to hold it to the kinds' schemas.
 */
import * as fs from "fs";
import * as path from "path";
import * as ts from "typescript";

/** The repository's root, which file names here are relative to. */
export const REPO = path.resolve(__dirname, "..");

/** The SDK file of a kind or of the shared types: `sdk/<name>.ts`. */
export const sdkFile = (name: string) => `sdk/${name}.ts`;

/** A member of an interface or class as written. */
export interface SourceMember {
  name: string;
  optional: boolean;
  /** The JSDoc's text, lines joined by single spaces; undefined without one. */
  doc?: string;
  /** Where the JSDoc stands in the file (replaced by docs.ts); at the member's start when it has none. */
  docStart: number;
  docEnd: number;
  /** The member's own indentation. */
  indent: string;
}

/** The parsed source of `file` (its text as given, else as on disk). */
export function parseSource(file: string, text = fs.readFileSync(path.join(REPO, file), "utf8")): ts.SourceFile {
  return ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
}

/** A JSDoc comment's text: its lines without the `*` margin, joined by single spaces. */
export function jsdocText(comment: string): string {
  return comment
    .replace(/^\/\*\*|\*\/$/g, "")
    .split("\n")
    .map((l) => l.replace(/^\s*\* ?/, "").trim())
    .filter((l) => l !== "")
    .join(" ");
}

function memberOf(sf: ts.SourceFile, node: ts.PropertySignature | ts.PropertyDeclaration): SourceMember {
  const text = sf.getFullText();
  const start = node.getStart(sf);
  const ranges = ts.getLeadingCommentRanges(text, node.getFullStart()) ?? [];
  const doc = [...ranges].reverse().find((r) => text.startsWith("/**", r.pos));
  const lineStart = text.lastIndexOf("\n", start) + 1;
  return {
    name: node.name.getText(sf),
    optional: node.questionToken !== undefined,
    doc: doc ? jsdocText(text.slice(doc.pos, doc.end)) : undefined,
    docStart: doc ? doc.pos : start,
    docEnd: doc ? doc.end : start,
    indent: text.slice(lineStart, start),
  };
}

function find<T extends ts.Node>(sf: ts.SourceFile, is: (n: ts.Node) => n is T, name: string): T | undefined {
  return sf.statements.find((s): s is ts.Statement & T => is(s) && (s as unknown as { name?: ts.Identifier }).name?.text === name);
}

/** The members of interface `name` in declaration order; undefined when the file has no such interface. */
export function interfaceMembers(sf: ts.SourceFile, name: string): SourceMember[] | undefined {
  return find(sf, ts.isInterfaceDeclaration, name)
    ?.members.filter(ts.isPropertySignature)
    .map((m) => memberOf(sf, m));
}

/** The outputs class `name` declares (`declare public readonly x: pulumi.Output<…>`). */
export function classOutputs(sf: ts.SourceFile, name: string): SourceMember[] | undefined {
  return find(sf, ts.isClassDeclaration, name)
    ?.members.filter(ts.isPropertyDeclaration)
    .filter((m) => ts.getModifiers(m)?.some((x) => x.kind === ts.SyntaxKind.DeclareKeyword))
    .map((m) => memberOf(sf, m));
}

/** The JSDoc text of class `name`. */
export function classDoc(sf: ts.SourceFile, name: string): string | undefined {
  const c = find(sf, ts.isClassDeclaration, name);
  return c ? memberOf(sf, c as unknown as ts.PropertyDeclaration).doc : undefined;
}

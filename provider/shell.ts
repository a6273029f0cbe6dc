/**
 * The ONE place where values become shell or nft text.
 *
 * Every value that reaches a remote shell goes through {@link sh} (a tagged
 * template that quotes each interpolation) or one of the helpers below. Code
 * elsewhere never concatenates values into script text: it builds {@link Script}
 * fragments with `sh` and joins fragments with {@link joinLines} / {@link andThen}.
 *
 * Quoting is POSIX single-quote style: inside '…' nothing is special, and a
 * single quote is written as '\'' . That holds for sh, dash, bash, ash and zsh.
 */

/** A fragment of shell text whose values were quoted by this module. */
export class Script {
  private readonly brand = "kvmnet-script";
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/** Values `sh` accepts in an interpolation. */
export type ShellValue = string | number | boolean | Script | readonly (string | number | Script)[];

/** Quote one string for a POSIX shell. Always quotes, even "safe" words. */
export function shq(value: string): string {
  if (value.includes("\0")) {
    // A NUL can never be part of an argument; reaching here is a bug upstream.
    throw new TypeError("shell value contains a NUL byte");
  }
  return "'" + value.replace(/'/g, "'\\''") + "'";
}

function quoteValue(v: ShellValue): string {
  if (v instanceof Script) return v.text;
  // Array.isArray narrows a readonly array to any[]; the element type is the declared one.
  if (Array.isArray(v)) return (v as readonly ShellValue[]).map((x) => quoteValue(x)).join(" ");
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new TypeError(`non-finite number in shell script: ${v}`);
    return String(v);
  }
  if (typeof v === "boolean") return v ? "1" : "0";
  if (typeof v === "string") return shq(v);
  throw new TypeError(`unsupported shell value: ${typeof v}`);
}

/**
 * Tagged template: `sh\`ip link set dev ${name} mtu ${mtu}\`` quotes `name`
 * (strings are always single-quoted; numbers printed; Script fragments inserted
 * as they are; arrays become space-separated quoted words).
 */
export function sh(strings: TemplateStringsArray, ...values: ShellValue[]): Script {
  let out = strings[0];
  values.forEach((v, i) => {
    out += quoteValue(v) + strings[i + 1];
  });
  return new Script(out);
}

/** Insert literal shell text written in this repository (never user data). */
export function literal(text: string): Script {
  return new Script(text);
}

/** Join fragments with newlines. */
export function joinLines(parts: readonly (Script | undefined | false)[]): Script {
  return new Script(
    parts
      .filter((p): p is Script => p instanceof Script)
      .map((p) => p.text)
      .join("\n"),
  );
}

/** Join fragments with ` && ` so the list stops at the first failure. */
export function andThen(parts: readonly Script[]): Script {
  return new Script(parts.map((p) => p.text).join(" && "));
}

/**
 * Write `content` to `path` on the host with a quoted here-document. The
 * delimiter is chosen so it cannot occur as a line of the content.
 */
export function writeFile(path: string, content: string, mode = "0644"): Script {
  const delim = heredocDelimiter(content);
  const body = content.endsWith("\n") ? content : content + "\n";
  return new Script(
    // The umask stays in the subshell: later steps (mkdir -p of a drop-in dir
    // networkd, running unprivileged, must read) get the host's own umask.
    `(umask 077 && cat > ${shq(path + ".tmp")}) <<'${delim}'\n${body}${delim}\n` + `chmod ${shq(mode)} ${shq(path + ".tmp")} && mv -f ${shq(path + ".tmp")} ${shq(path)}`,
  );
}

/**
 * Quote a value as an nft double-quoted string (comments, interface names).
 * nft has no escape for `"`, so values containing it (or newlines, or
 * backslashes) are refused; schemas reject such values long before this.
 */
export function nftString(value: string): string {
  if (/["\\\n\r\0]/.test(value)) {
    throw new TypeError(`value cannot be written as an nft string: ${JSON.stringify(value)}`);
  }
  return `"${value}"`;
}

/** An IPv4 address or prefix for nft text (schemas admit only these; this is the second fence). */
export function nftAddr(value: string): string {
  if (!/^(?:\d{1,3}\.){3}\d{1,3}(?:\/\d{1,2})?$/.test(value)) throw new TypeError(`not an IPv4 address or prefix: ${JSON.stringify(value)}`);
  return value;
}

/** A port or port range (`8080`, `8000-8010`) for nft text. */
export function nftPortRange(first: number, last: number): string {
  for (const p of [first, last]) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new TypeError(`not a port: ${p}`);
  return first === last ? String(first) : `${first}-${last}`;
}

/** An nft identifier (table/chain/set names): letters, digits, `_`, starting with a letter. */
export function nftIdent(value: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(value)) {
    throw new TypeError(`not a valid nft identifier: ${JSON.stringify(value)}`);
  }
  return value;
}

function heredocDelimiter(content: string): string {
  let delim = "KVMNET_EOF";
  let n = 0;
  const lines = new Set(content.split("\n"));
  while (lines.has(delim)) delim = `KVMNET_EOF_${++n}`;
  return delim;
}

/**
 * Give `script` the standard input `stdin` by wrapping it in a group fed by a
 * quoted here-document (the transport sends the script itself on stdin).
 */
export function withStdin(script: string, stdin: string): string {
  const delim = heredocDelimiter(stdin);
  const body = stdin.endsWith("\n") ? stdin : stdin + "\n";
  return `{\n${script}\n} <<'${delim}'\n${body}${delim}\n`;
}

/**
 * The whole script as ONE compound command, as the transports send it on
 * `sh -s`'s standard input. sh runs each command as soon as it has read it, so
 * a client that died mid-send (the provider killed, the connection cut) would
 * leave the host running the first half of an apply script and a truncated
 * last line (#14: interrupted applies). A brace group is read to its closing
 * `}` before any of it runs: a cut script is a syntax error and runs nothing.
 */
export function wholeScript(script: string): string {
  return `{\n${script.endsWith("\n") ? script : script + "\n"}}\n`;
}

import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import fc from "fast-check";
import { andThen, literal, nftIdent, nftString, sh, shq, wholeScript, withStdin, writeFile } from "../../provider/shell";

/** Ask a real /bin/sh what words a fragment expands to. */
function words(fragment: string): string[] {
  const out = execFileSync("sh", ["-c", `for w in ${fragment}; do printf '%s\\0' "$w"; done`], { encoding: "utf8" });
  return out.split("\0").slice(0, -1);
}

describe("shq", () => {
  it("round-trips any string without NUL through a real sh", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "binary" }).filter((s) => !s.includes("\0")),
        (s) => {
          expect(words(shq(s))).toEqual([s]);
        },
      ),
      { numRuns: 150 },
    );
  });

  it.each([["$(touch /tmp/pwned)"], ["`id`"], ["a'b"], ["'; rm -rf / #"], ["line1\nline2"], ["*"], ["~root"], ["$HOME"]])("keeps %j literal", (s) => {
    expect(words(shq(s))).toEqual([s]);
  });

  it("refuses NUL bytes", () => {
    expect(() => shq("a\0b")).toThrow(/NUL/);
  });
});

describe("sh template", () => {
  it("quotes strings, prints numbers, expands arrays to words and inserts Script fragments raw", () => {
    const s = sh`ip link set dev ${"br 0"} mtu ${9000} ${["a b", "c"]} ${literal("&& true")}`;
    expect(s.text).toBe("ip link set dev 'br 0' mtu 9000 'a b' 'c' && true");
  });
  it("refuses non-finite numbers", () => {
    expect(() => sh`x ${NaN}`).toThrow(/non-finite/);
  });
  it("andThen joins with &&", () => {
    expect(andThen([sh`a`, sh`b`]).text).toBe("a && b");
  });
});

describe("writeFile / withStdin", () => {
  it("keeps its umask to itself: a directory made after it in the same script is 755, the file has the mode asked for", () => {
    const dir = execFileSync("mktemp", ["-d"], { encoding: "utf8" }).trim();
    const out = execFileSync(
      "sh",
      ["-c", `umask 022\n${writeFile(`${dir}/f`, "x", "0600").text}\nmkdir ${shq(`${dir}/d.d`)} && stat -c '%a' ${shq(`${dir}/d.d`)} ${shq(`${dir}/f`)}`],
      { encoding: "utf8" },
    );
    expect(out.trim().split("\n")).toEqual(["755", "600"]);
    execFileSync("rm", ["-rf", dir]);
  });
  it("writes content verbatim even when it contains the default delimiter", () => {
    const dir = execFileSync("mktemp", ["-d"], { encoding: "utf8" }).trim();
    const content = "line $HOME `x`\nKVMNET_EOF\n'quote'\n";
    execFileSync("sh", ["-c", writeFile(`${dir}/f`, content).text]);
    expect(execFileSync("cat", [`${dir}/f`], { encoding: "utf8" })).toBe(content);
    execFileSync("rm", ["-rf", dir]);
  });
  it("feeds stdin to the script", () => {
    const out = execFileSync("sh", ["-s"], { input: withStdin("cat", "hello $x\nKVMNET_EOF\n"), encoding: "utf8" });
    expect(out).toBe("hello $x\nKVMNET_EOF\n");
  });
});

describe("nft quoting", () => {
  it("accepts plain strings and refuses quotes and newlines", () => {
    expect(nftString("web https")).toBe('"web https"');
    expect(() => nftString('a"b')).toThrow();
    expect(() => nftString("a\nb")).toThrow();
  });
  it("accepts identifiers and refuses anything else", () => {
    expect(nftIdent("kvmnet_nat_lab")).toBe("kvmnet_nat_lab");
    expect(() => nftIdent("a;b")).toThrow();
    expect(() => nftIdent("1abc")).toThrow();
  });
});

describe("wholeScript (#14: a script cut mid-send runs nothing)", () => {
  /**
   * Feed a real `sh -s` what sshd would have passed on before the client died: the
   * text up to `cut` characters past the end of the script's first line. Did that
   * first command run?
   */
  function firstCommandRan(wrap: boolean, cut: number): boolean {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-cut-"));
    try {
      const plain = [`touch ${path.join(dir, "ran")}`, "echo step two", "cat <<'EOF'", "inside a here-document", "EOF", "echo last step"].join("\n");
      const text = wrap ? wholeScript(plain) : plain;
      const sent = text.slice(0, text.indexOf("\n", wrap ? 2 : 0) + 1 + cut);
      try {
        execFileSync("sh", ["-s"], { input: sent, stdio: ["pipe", "ignore", "ignore"] });
      } catch {
        /* a syntax error at the cut is the point */
      }
      return fs.existsSync(path.join(dir, "ran"));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it.each([0, 5, 20, 40, 60])("cut %i characters after the first line: the plain script ran it, the whole one nothing", (cut) => {
    expect(firstCommandRan(false, cut)).toBe(true);
    expect(firstCommandRan(true, cut)).toBe(false);
  });

  it("runs whole when nothing is cut", () => {
    expect(firstCommandRan(true, 10_000)).toBe(true);
  });
});

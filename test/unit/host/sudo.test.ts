import { execFileSync } from "child_process";
import fc from "fast-check";
import { frameForSudoPassword } from "../../../provider/host/sudo";

/**
 * Feed a frame to the real /bin/sh program it names, with nothing in front
 * consuming the password line: exactly what happens when sudo does not ask
 * (NOPASSWD), the worst case, where the shell sees every byte of the password.
 */
function runFramed(password: string, script: string): string {
  const f = frameForSudoPassword(password, script);
  const [file, ...args] = f.args;
  return execFileSync(file, args, { input: f.stdin, encoding: "utf8" });
}

describe("frameForSudoPassword", () => {
  it("runs only the script, whatever lines the password holds", () => {
    const line = fc.oneof(fc.constant("@@kvmnet-script"), fc.constant("echo INJECTED"), fc.constant("exec sh -s"), fc.string());
    fc.assert(
      fc.property(fc.array(line, { maxLength: 6 }), (lines) => {
        expect(runFramed(lines.join("\n"), "echo script-ran")).toBe("script-ran\n");
      }),
      { numRuns: 60 },
    );
  });

  it("uses a fresh marker per run, passed as an argument and never derived from the password", () => {
    const a = frameForSudoPassword("pw", "true");
    const b = frameForSudoPassword("pw", "true");
    expect(a.args[4]).toMatch(/^@@kvmnet-script-[0-9a-f]{32}$/);
    expect(a.args[4]).not.toBe(b.args[4]);
    expect(a.stdin).toBe(`pw\n${a.args[4]}\ntrue\n`);
  });
});

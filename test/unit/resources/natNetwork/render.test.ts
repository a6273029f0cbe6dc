import { spawnSync } from "child_process";
import { renderNatPlan } from "../../../../provider/resources/natNetwork/render";

describe("NatNetwork render: telling a live dnsmasq from a dead one", () => {
  const stop = renderNatPlan({ guards: [], actions: [{ op: "stopDnsmasq", name: "lab", systemd: false }] }).steps[0].run.text;
  // The pattern the script greps /proc/<pid>/stat with, as the shell passes it to grep.
  const zombiePattern = /grep -qE '([^']*Z)' \/proc\/\$p\/stat/.exec(stop)?.[1] ?? "";
  const grepE = (line: string) => spawnSync("grep", ["-qE", zombiePattern], { input: line + "\n" }).status;

  it("recognises a zombie (dead, not reaped) as not running: its comm still reads dnsmasq", () => {
    expect(zombiePattern).not.toBe("");
    expect(grepE("4242 (dnsmasq) Z 1 4242 4242 0 -1 4227916")).toBe(0);
  });

  it.each(["4242 (dnsmasq) S 1 4242 4242 0 -1", "4242 (dnsmasq) T 1 4242 4242 0 -1"])("a live one (%s) is running", (line) => {
    expect(grepE(line)).toBe(1);
  });
});

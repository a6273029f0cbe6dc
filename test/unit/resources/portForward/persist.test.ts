/**
 * PortForward persistence: the boot unit and table file rendered from the
 * inputs, and the live steps that take them off. Pure, against the captured
 * snapshot pf-two-forwards-v1.txt (see plan.test.ts) with systemd switched on
 * and a persist section as the observe script prints it.
 */
import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { manifestPath, persistDrift, PersistFile } from "../../../../provider/persist";
import { portForwardInputsSchema } from "../../../../provider/resources/portForward";
import { portForwardPersist } from "../../../../provider/resources/portForward/persist";
import { desiredTable, planPortForward, planPortForwardDelete } from "../../../../provider/resources/portForward/plan";
import { renderForwardDelete, renderForwardPlan, renderTable } from "../../../../provider/resources/portForward/render";
import { PortForwardInputs } from "../../../../provider/resources/portForward/schema";
import { expectKvmnetThrow } from "../../../support/expectError";

const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/pf-two-forwards-v1.txt"), "utf8");
const b64 = (s: string) => Buffer.from(s).toString("base64");
const NM = ["active NetworkManager active", "active systemd-networkd inactive", "active networking inactive"];

function hostWith(persistLines: string[], systemd = true): HostSnapshot {
  const text = fixture.replace(/@@kvmnet-begin systemd\n[^\n]*\n/, `@@kvmnet-begin systemd\n${systemd ? "yes" : "no"}\n`);
  return parseSnapshot(`${text}\n@@kvmnet-begin persist\n${persistLines.join("\n")}\n@@kvmnet-end persist 0\n`, "fixture");
}
function manifestLines(name: string, files: PersistFile[]): string[] {
  return [
    `@@manifest ${manifestPath("portforward", name)}`,
    ...files.map((f) => (f.link !== undefined ? `@@link ${f.path} ${f.link}` : `@@file ${f.path} ${b64(f.content!.endsWith("\n") ? f.content! : f.content + "\n")}`)),
  ];
}

const input = (v: Record<string, unknown>): PortForwardInputs => portForwardInputsSchema.parse({ connection: { host: "kvm1.example.net" }, persistence: "auto", ...v });
const web = input({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 80, description: "web on vpf1" });

describe("portForwardPersist", () => {
  const host = hostWith(NM);

  it("renders the table as replace-or-create, an enabled boot unit loading it, and the nftables drop-in", () => {
    const files = portForwardPersist(web, "networkmanager", host).files;
    expect(files.map((f) => f.path)).toEqual([
      "/etc/kvmnet/pf-tcp_any_8080.nft",
      "/etc/systemd/system/kvmnet-pf-tcp_any_8080.service",
      "/etc/systemd/system/multi-user.target.wants/kvmnet-pf-tcp_any_8080.service",
      "/etc/systemd/system/nftables.service.d/kvmnet-pf-tcp_any_8080.conf",
    ]);
    const [table, unit, link, dropIn] = files;
    // Loadable on a host that has the table already (a manual start) and on one that has not (boot).
    expect(table.content).toBe(`table ip kvmnet_pf_tcp_any_8080 {}\ndelete table ip kvmnet_pf_tcp_any_8080\n${renderTable(desiredTable(web, host))}`);
    // The hairpin masquerade names the destination's subnet as the host has it (the NAT bridge's).
    expect(table.content).toContain("ip saddr 10.77.0.0/24 ip daddr 10.77.0.10 tcp dport 80 ct status dnat masquerade");
    expect(unit.content).toMatch(/^ExecStart=nft -f \/etc\/kvmnet\/pf-tcp_any_8080\.nft$/m);
    expect(unit.content).toMatch(/^After=network\.target nftables\.service$/m);
    expect(unit.content).toMatch(/^Type=oneshot$/m);
    expect(unit.content).toMatch(/^WantedBy=multi-user\.target$/m);
    expect(link.link).toBe("/etc/systemd/system/kvmnet-pf-tcp_any_8080.service");
    expect(dropIn.content).toMatch(/^ExecStartPost=-nft -f \/etc\/kvmnet\/pf-tcp_any_8080\.nft$/m);
    expect(dropIn.content).toMatch(/^ExecReload=-nft -f \/etc\/kvmnet\/pf-tcp_any_8080\.nft$/m);
  });

  it("needs systemd", () => {
    expectKvmnetThrow(() => portForwardPersist(web, "networkmanager", hostWith(NM, false)), "Unsupported", /portforward tcp_any_8080: persistence "networkmanager" needs systemd/);
  });

  it("is in sync with its own files and sees an edited table as drift", () => {
    const want = portForwardPersist(web, "networkmanager", host);
    expect(persistDrift("portforward", web.name, want, hostWith([...NM, ...manifestLines(web.name, want.files)]))).toEqual([]);
    const edited = want.files.map((f) => (f.path.endsWith(".nft") ? { ...f, content: f.content!.replace("dport 80", "dport 81") } : f));
    expect(persistDrift("portforward", web.name, want, hostWith([...NM, ...manifestLines(web.name, edited)]))).toEqual([
      "/etc/kvmnet/pf-tcp_any_8080.nft differs from what the inputs render",
    ]);
  });
});

describe("taking persistence off", () => {
  const files = portForwardPersist(web, "networkmanager", hostWith(NM)).files;
  const persisted = hostWith([...NM, ...manifestLines(web.name, files)]);

  it("delete stops the boot unit and removes the drop-in before the table", () => {
    const steps = renderForwardDelete(planPortForwardDelete(web, persisted)).steps;
    expect(steps.map((s) => s.description)).toEqual([
      "stop boot unit kvmnet-pf-tcp_any_8080.service",
      "remove nftables.service drop-in /etc/systemd/system/nftables.service.d/kvmnet-pf-tcp_any_8080.conf",
      "delete nft table ip kvmnet_pf_tcp_any_8080",
    ]);
    // Without persisted files: only the table, as before.
    expect(renderForwardDelete(planPortForwardDelete(web, hostWith(NM))).steps.map((s) => s.description)).toEqual(["delete nft table ip kvmnet_pf_tcp_any_8080"]);
  });

  it("an update to runtime takes the hooks off after rewriting the table; staying persistent does not", () => {
    const rt = { ...web, persistence: "runtime" as const };
    expect(renderForwardPlan(planPortForward(rt, persisted, web)).steps.map((s) => s.description)).toEqual([
      "rewrite nft table ip kvmnet_pf_tcp_any_8080",
      "stop boot unit kvmnet-pf-tcp_any_8080.service",
      "remove nftables.service drop-in /etc/systemd/system/nftables.service.d/kvmnet-pf-tcp_any_8080.conf",
    ]);
    expect(planPortForward(web, persisted, web).disarm).toBeUndefined();
  });
});

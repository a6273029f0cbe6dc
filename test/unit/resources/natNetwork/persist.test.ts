/**
 * NatNetwork persistence: the boot-time files rendered from the inputs, and the
 * live steps that take them off. Pure, against the captured sandbox snapshot
 * (networks "lab" and "iso", see plan.test.ts) with systemd switched on and a
 * persist section as the observe script prints it.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { manifestPath, persistDrift, PersistFile, persistSteps } from "../../../../provider/persist";
import { bridgeMac, natState } from "../../../../provider/resources/natNetwork/files";
import { FORWARD_WITHOUT_OURS_AWK, natPersist, natPersistPaths, natUpScript, persistentDnsmasqUnitText } from "../../../../provider/resources/natNetwork/persist";
import { NatAction, planNat, planNatDelete } from "../../../../provider/resources/natNetwork/plan";
import { renderNatPlan } from "../../../../provider/resources/natNetwork/render";
import { NatNetworkInputs, natNetworkInputsSchema } from "../../../../provider/resources/natNetwork/schema";
import { expectKvmnetThrow } from "../../../support/expectError";

const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/nat-lab-iso-dockerdrop.txt"), "utf8");
const b64 = (s: string) => Buffer.from(s).toString("base64");

/** The fixture host (without Docker's drop chain), systemd on or off, plus persist lines. */
function hostWith(persistLines: string[], systemd = true): HostSnapshot {
  const text = fixture.replace(/@@kvmnet-begin systemd\n[^\n]*\n/, `@@kvmnet-begin systemd\n${systemd ? "yes" : "no"}\n`);
  const snap = parseSnapshot(`${text}\n@@kvmnet-begin persist\n${persistLines.join("\n")}\n@@kvmnet-end persist 0\n`, "fixture");
  return { ...snap, nftables: (snap.nftables ?? []).filter((o) => !JSON.stringify(o).includes('"table":"filter"') && !JSON.stringify(o).includes('"name":"filter"')) };
}

/** Persist lines for a manifest holding exactly `files`, as the host would print them. */
function manifestLines(name: string, files: PersistFile[]): string[] {
  return [
    `@@manifest ${manifestPath("natNetwork", name)}`,
    ...files.map((f) => (f.link !== undefined ? `@@link ${f.path} ${f.link}` : `@@file ${f.path} ${b64(f.content!.endsWith("\n") ? f.content! : f.content + "\n")}`)),
  ];
}

const IFUPDOWN = ["active NetworkManager inactive", "active systemd-networkd inactive", "active networking active", "ifup yes"];
const inputs = (over: Record<string, unknown>): NatNetworkInputs => natNetworkInputsSchema.parse({ connection: { host: "h" }, persistence: "auto", ...over });
const lab = inputs({
  name: "lab",
  subnet: "10.77.0.0/24",
  uplink: "eth0",
  dhcp: { start: "10.77.0.100", end: "10.77.0.150", hosts: [{ mac: "52:54:00:00:77:10", ip: "10.77.0.10", hostname: "web" }] },
  dns: { domain: "lab.test", hosts: [{ ip: "10.77.0.5", hostnames: ["db"] }] },
});
const iso = inputs({ name: "iso", mode: "isolated", subnet: "10.78.0.0/24", dns: { enabled: false } });
const fresh = inputs({ name: "new", subnet: "10.79.0.0/24", mtu: 1400, dhcp: { start: "10.79.0.10", end: "10.79.0.20" } });
const ops = (actions: NatAction[]) => actions.map((a) => (a.op === "dnsmasq" ? `dnsmasq:${a.how}` : a.op));
const byPath = (files: PersistFile[]) => new Map(files.map((f) => [f.path, f]));

describe("natPersist", () => {
  const host = hostWith(IFUPDOWN);

  it("renders the boot unit, the enabled dnsmasq unit, the nftables drop-in, ip_forward and the copies", () => {
    const files = natPersist(lab, "ifupdown", host).files;
    expect(files.map((f) => f.path)).toEqual([
      "/etc/kvmnet/nat-lab.up.sh",
      "/etc/kvmnet/nat-lab.table.nft",
      "/etc/kvmnet/nat-lab.state.json",
      "/etc/kvmnet/nat-lab.dnsmasq.conf",
      "/etc/kvmnet/nat-lab.dhcp-hosts",
      "/etc/kvmnet/nat-lab.hosts",
      "/etc/systemd/system/kvmnet-nat-lab.service",
      "/etc/systemd/system/multi-user.target.wants/kvmnet-nat-lab.service",
      "/etc/systemd/system/kvmnet-dnsmasq-lab.service",
      "/etc/systemd/system/multi-user.target.wants/kvmnet-dnsmasq-lab.service",
      "/etc/systemd/system/nftables.service.d/kvmnet-nat-lab.conf",
      "/etc/sysctl.d/90-kvmnet-nat-lab.conf",
    ]);
    const f = byPath(files);
    // `systemctl enable`'s links.
    expect(f.get("/etc/systemd/system/multi-user.target.wants/kvmnet-nat-lab.service")?.link).toBe("/etc/systemd/system/kvmnet-nat-lab.service");
    expect(f.get("/etc/systemd/system/multi-user.target.wants/kvmnet-dnsmasq-lab.service")?.link).toBe("/etc/systemd/system/kvmnet-dnsmasq-lab.service");

    const unit = f.get("/etc/systemd/system/kvmnet-nat-lab.service")!.content!;
    expect(unit).toMatch(/^After=network\.target nftables\.service$/m);
    expect(unit).toMatch(/^Before=libvirtd\.service/m);
    expect(unit).toMatch(/^Type=oneshot$/m);
    expect(unit).toMatch(/^RemainAfterExit=yes$/m);
    expect(unit).toMatch(/^ExecStart=\/bin\/sh \/etc\/kvmnet\/nat-lab\.up\.sh$/m);
    expect(unit).toMatch(/\[Install\]\nWantedBy=multi-user\.target\n$/);
    // Not PartOf=nftables.service: the drop-in does that job (see persist.ts).
    expect(unit).not.toMatch(/PartOf/);

    const dropIn = f.get("/etc/systemd/system/nftables.service.d/kvmnet-nat-lab.conf")!.content!;
    expect(dropIn).toMatch(/^\[Service\]\nExecStartPost=-nft -f \/etc\/kvmnet\/nat-lab\.table\.nft\nExecReload=-nft -f \/etc\/kvmnet\/nat-lab\.table\.nft$/m);

    expect(f.get("/etc/sysctl.d/90-kvmnet-nat-lab.conf")!.content).toMatch(/^net\.ipv4\.ip_forward = 1$/m);
    // The copies are exactly what the live apply writes.
    const state = natState(lab, host);
    expect(f.get("/etc/kvmnet/nat-lab.table.nft")!.content).toBe(state.table);
    expect(f.get("/etc/kvmnet/nat-lab.dnsmasq.conf")!.content).toBe(state.files!.conf);
    expect(f.get("/etc/kvmnet/nat-lab.dhcp-hosts")!.content).toBe("52:54:00:00:77:10,10.77.0.10,web\n");
    expect(f.get("/etc/kvmnet/nat-lab.hosts")!.content).toBe("10.77.0.5 db\n");
  });

  it("leaves out dnsmasq and ip_forward for an isolated network without DHCP or DNS", () => {
    const paths = natPersist(iso, "networkd", host).files.map((f) => f.path);
    expect(paths).toEqual([
      "/etc/kvmnet/nat-iso.up.sh",
      "/etc/kvmnet/nat-iso.table.nft",
      "/etc/kvmnet/nat-iso.state.json",
      "/etc/systemd/system/kvmnet-nat-iso.service",
      "/etc/systemd/system/multi-user.target.wants/kvmnet-nat-iso.service",
      "/etc/systemd/system/nftables.service.d/kvmnet-nat-iso.conf",
    ]);
    expect(natUpScript(iso)).not.toMatch(/ip_forward|dnsmasq/);
  });

  it("orders dnsmasq after the boot unit without pulling it in (a live restart must not run the boot script)", () => {
    const text = persistentDnsmasqUnitText("lab");
    const unitSection = text.slice(0, text.indexOf("[Service]"));
    expect(unitSection).toMatch(/^After=kvmnet-nat-lab\.service$/m);
    expect(text).not.toMatch(/^(Requires|Wants|BindsTo|Requisite)=/m);
    expect(text).toMatch(/^ExecStart=dnsmasq --conf-file=\/run\/kvmnet\/nat\/lab\/dnsmasq\.conf$/m);
    expect(text).toMatch(/\n\n\[Install\]\nWantedBy=multi-user\.target\n$/);
  });

  it("persists the very state record the live apply writes (so the first plan after a reboot is a no-op)", () => {
    const host0 = hostWith(IFUPDOWN);
    const written = planNat(fresh, host0).actions.find((a) => a.op === "writeState");
    expect(written?.op).toBe("writeState");
    const persisted = byPath(natPersist(fresh, "ifupdown", host0).files).get(natPersistPaths("new").state)!.content;
    expect(persisted).toBe(JSON.stringify((written as Extract<NatAction, { op: "writeState" }>).state));
    expect(JSON.parse(persisted!)).toMatchObject({ uplink: "eth0", dnsmasqUnit: "kvmnet-dnsmasq-new.service" });
  });

  it("is a deterministic function of the inputs and the host's default route", () => {
    const a = natPersist(fresh, "ifupdown", host);
    expect(natPersist(fresh, "ifupdown", hostWith(IFUPDOWN))).toEqual(a);
    // The uplink comes from the default route when not given; the table names it.
    expect(byPath(a.files).get(natPersistPaths("new").table)!.content).toContain('oifname "eth0"');
  });

  it("needs systemd", () => {
    expectKvmnetThrow(() => natPersist(lab, "ifupdown", hostWith(IFUPDOWN, false)), "Unsupported", /natNetwork lab: persistence "ifupdown" needs systemd/);
  });

  it("is in sync on a host that has exactly these files, and reports an edit as drift", () => {
    const want = natPersist(lab, "ifupdown", host);
    const synced = hostWith([...IFUPDOWN, ...manifestLines("lab", want.files)]);
    expect(persistDrift("natNetwork", "lab", want, synced)).toEqual([]);
    expect(persistSteps("natNetwork", "lab", want, synced)).toEqual([]);
    const edited = want.files.map((f) => (f.path.endsWith(".dnsmasq.conf") ? { ...f, content: f.content + "log-queries\n" } : f));
    const drifted = hostWith([...IFUPDOWN, ...manifestLines("lab", edited)]);
    expect(persistDrift("natNetwork", "lab", want, drifted)).toEqual(["/etc/kvmnet/nat-lab.dnsmasq.conf differs from what the inputs render"]);
  });
});

describe("natUpScript (what the boot unit runs)", () => {
  const script = natUpScript(fresh);

  it("is valid sh that stops at the first failure", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-up-"));
    try {
      fs.writeFileSync(path.join(dir, "up.sh"), script);
      execFileSync("sh", ["-n", path.join(dir, "up.sh")]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(script.split("\n").slice(0, 4)).toEqual([
      "#!/bin/sh",
      expect.stringMatching(/^# Written by pulumi-kvmnet/),
      "set -e",
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
  });

  it("recreates the live create's objects from the persisted copies, idempotently, the state record last", () => {
    const p = natPersistPaths("new");
    const lines = script.trimEnd().split("\n");
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    expect(script).toContain(`cp '${p.conf}' '/run/kvmnet/nat/new/dnsmasq.conf'`);
    expect(script).toContain(`ip link show dev 'kvn-new' >/dev/null 2>&1 || ip link add name 'kvn-new' address '${bridgeMac("new")}' type bridge`);
    expect(script).toContain("ip link set dev 'kvn-new' mtu 1400");
    expect(script).toContain("ip addr replace '10.79.0.1/24' dev 'kvn-new'");
    expect(script).toContain(`cp '${p.table}' '/run/kvmnet/nat/new/table.nft' && nft -f '/run/kvmnet/nat/new/table.nft'`);
    expect(script).toContain(": > '/run/kvmnet/state/ipforward/natNetwork.new' && echo 1 > /proc/sys/net/ipv4/ip_forward");
    expect(at(/ip link add/)).toBeLessThan(at(/ip addr replace/));
    expect(at(/ip addr replace/)).toBeLessThan(at(/nft -f/));
    expect(lines[lines.length - 1]).toBe(`mkdir -p '/run/kvmnet/state/natNetwork' && cp '${p.state}' '/run/kvmnet/state/natNetwork/new.json'`);
  });

  // What systemd-analyze cat-config prints: files in application order, each after its path.
  const cat = (...files: [string, string][]) => files.map(([p, body]) => `# ${p}\n${body}\n`).join("\n");
  const forwardWithoutOurs = (input: string) => execFileSync("awk", [FORWARD_WITHOUT_OURS_AWK], { input, encoding: "utf8" }).trim();

  it.each([
    ["no file sets it: the kernel default", "0", cat(["/usr/lib/sysctl.d/50-pid-max.conf", "kernel.pid_max = 4194304"])],
    [
      "only our file sets it",
      "0",
      cat(
        ["/usr/lib/sysctl.d/50-default.conf", "net.ipv4.conf.all.rp_filter = 2"],
        ["/etc/sysctl.d/90-kvmnet-nat-lab.conf", "# Written by pulumi-kvmnet\nnet.ipv4.ip_forward = 1"],
      ),
    ],
    [
      "the administrator's sysctl.conf turns it on",
      "1",
      cat(["/etc/sysctl.d/90-kvmnet-nat-lab.conf", "net.ipv4.ip_forward = 1"], ["/etc/sysctl.d/99-sysctl.conf", "#net.ipv4.ip_forward=0\nnet.ipv4.ip_forward=1"]),
    ],
    ["a later file wins, slash notation too", "0", cat(["/etc/sysctl.d/10-a.conf", "net.ipv4.ip_forward=1"], ["/etc/sysctl.d/20-b.conf", "-net/ipv4/ip_forward = 0"])],
  ])("ip_forward to restore when %s: %s", (_what, want, input) => {
    expect(forwardWithoutOurs(input)).toBe(want);
  });
});

describe("taking persistence off", () => {
  const persisted = (n: NatNetworkInputs) => natPersist(n, "ifupdown", hostWith(IFUPDOWN)).files;

  it("delete stops the boot unit and removes the nftables drop-in before the table goes", () => {
    const host = hostWith([...IFUPDOWN, ...manifestLines("lab", persisted(lab))]);
    const plan = planNatDelete(lab, host);
    expect(ops(plan.actions)).toEqual(["stopDnsmasq", "disarmBootHooks", "deleteTable", "releaseForward", "deleteBridge", "removeFiles"]);
    const steps = renderNatPlan(plan).steps;
    const stop = steps.find((s) => s.description === "stop boot unit kvmnet-nat-lab.service")!;
    expect(stop.run.text).toContain("systemctl stop 'kvmnet-nat-lab.service'");
    const drop = steps.find((s) => s.description.startsWith("remove nftables.service drop-in"))!;
    expect(drop.run.text).toBe(
      "rm -f '/etc/systemd/system/nftables.service.d/kvmnet-nat-lab.conf' && { rmdir '/etc/systemd/system/nftables.service.d' 2>/dev/null || true; } && systemctl daemon-reload",
    );
    // Undone, the drop-in comes back as the host had it.
    expect(drop.undo?.text).toContain("ExecStartPost=-nft -f /etc/kvmnet/nat-lab.table.nft");
    expect(steps.indexOf(drop)).toBeLessThan(steps.findIndex((s) => s.description.startsWith("delete nft table")));
    // The persisted dnsmasq unit counts when stopping dnsmasq (after a reboot it is the only one).
    expect(steps[0].run.text).toContain("[ -f '/etc/systemd/system/kvmnet-dnsmasq-lab.service' ]");
  });

  it("delete of a network that never persisted has no such steps", () => {
    expect(ops(planNatDelete(lab, hostWith(IFUPDOWN)).actions)).not.toContain("disarmBootHooks");
  });

  it("an update to runtime takes the hooks off and keeps the running dnsmasq as a runtime unit", () => {
    const host = hostWith([...IFUPDOWN, ...manifestLines("lab", persisted(lab))]);
    const toRuntime = { ...lab, persistence: "runtime" as const };
    // The fixture was captured without systemd: its state has no unit. Planned on systemd, the
    // dnsmasq config is unchanged, so nothing restarts it and it must be kept as a runtime unit.
    const a = planNat(toRuntime, host, toRuntime).actions;
    expect(ops(a)).toEqual(expect.arrayContaining(["disarmBootHooks", "writeRuntimeUnit"]));
    const step = renderNatPlan({ guards: [], actions: a.filter((x) => x.op === "writeRuntimeUnit") }).steps[0];
    expect(step.run.text).toContain("'/run/systemd/system/kvmnet-dnsmasq-lab.service'");
    // Staying persistent: nothing of the kind.
    expect(ops(planNat(lab, host, lab).actions)).not.toEqual(expect.arrayContaining(["disarmBootHooks"]));
    expect(ops(planNat(lab, host, lab).actions)).not.toContain("writeRuntimeUnit");
  });

  it("runtime plans are unchanged when nothing was ever persisted", () => {
    const rt = { ...lab, persistence: "runtime" as const };
    expect(ops(planNat(rt, hostWith([], false), rt).actions)).toEqual(["recordSysctl"]);
  });
});

/**
 * The golden record of persistence: what every kind writes on every stack
 * (file paths, modes, links, contents, so every NetworkManager UUID), the
 * persistence core's write/remove steps, and every script that stops a boot
 * unit (disarm on delete, the NatNetwork's dnsmasq unit, the commit-confirm
 * timer), rendered for a few representative inputs and compared with the
 * committed record (fixtures/golden.txt). Hosts already have these files:
 * a change here is a change on every host, made deliberately or not at all.
 *
 * KVMNET_WRITE_GOLDEN=1 rewrites the record (review its diff).
 */
import * as fs from "fs";
import * as path from "path";
import { armStep, confirmScript, revertProgram } from "../../../provider/confirm";
import { HostSnapshot, parseSnapshot } from "../../../provider/observe";
import { manifestPath, PersistFile, PersistSet, persistSteps } from "../../../provider/persist";
import type { Plan, Step } from "../../../provider/render";
import { bridgePersist } from "../../../provider/resources/bridge/persist";
import { bridgeInputsSchema } from "../../../provider/resources/bridge/schema";
import { natPersist } from "../../../provider/resources/natNetwork/persist";
import { planNatDelete } from "../../../provider/resources/natNetwork/plan";
import { renderNatPlan } from "../../../provider/resources/natNetwork/render";
import { natNetworkInputsSchema } from "../../../provider/resources/natNetwork/schema";
import { pciDisarmSteps, pciPersist } from "../../../provider/resources/pciPassthrough/persist";
import { pciPassthroughStoredSchema } from "../../../provider/resources/pciPassthrough/schema";
import { portForwardInputsSchema } from "../../../provider/resources/portForward";
import { portForwardPersist } from "../../../provider/resources/portForward/persist";
import { planPortForwardDelete } from "../../../provider/resources/portForward/plan";
import { renderForwardDelete } from "../../../provider/resources/portForward/render";
import { persistTap } from "../../../provider/resources/tapInterface/persist";
import { tapInterfaceInputsSchema } from "../../../provider/resources/tapInterface/schema";
import { persistVlan } from "../../../provider/resources/vlanSubinterface/persist";
import { vlanSubinterfaceInputsSchema } from "../../../provider/resources/vlanSubinterface/schema";
import { literal } from "../../../provider/shell";

const GOLDEN = path.join(__dirname, "fixtures", "golden.txt");
const OBSERVE = path.join(__dirname, "../../fixtures/observe");
const read = (p: string) => fs.readFileSync(p, "utf8");
const b64 = (s: string) => Buffer.from(s).toString("base64");
const withNl = (s: string) => (s.endsWith("\n") ? s : s + "\n");

type Backend = "networkd" | "networkmanager" | "ifupdown";
const BACKENDS: Backend[] = ["networkd", "networkmanager", "ifupdown"];
const STACK_LINES: Record<Backend, string[]> = {
  networkmanager: ["active NetworkManager active", "active systemd-networkd inactive", "active networking inactive"],
  networkd: ["active NetworkManager inactive", "active systemd-networkd active", "active networking inactive"],
  ifupdown: ["active NetworkManager inactive", "active systemd-networkd inactive", "active networking active", "ifup yes"],
};

/** A fixture host with systemd on, the stack lines, a vlanPersist section and a manifest. */
function host(fixture: string, persistLines: string[], stackFacts: string[] = []): HostSnapshot {
  const text = fixture.replace(/@@kvmnet-begin systemd\n[^\n]*\n/, "@@kvmnet-begin systemd\nyes\n");
  const extra =
    `\n@@kvmnet-begin persist\n${persistLines.join("\n")}\n@@kvmnet-end persist 0\n` +
    (stackFacts.length ? `@@kvmnet-begin vlanPersist\n${stackFacts.join("\n")}\n@@kvmnet-end vlanPersist 0\n` : "");
  return parseSnapshot(text + extra, "fixture");
}

function manifestLines(kind: string, name: string, files: PersistFile[]): string[] {
  return [
    `@@manifest ${manifestPath(kind, name)}`,
    ...files.map((f) => (f.link !== undefined ? `@@link ${f.path} ${f.link}` : `@@file ${f.path} ${b64(withNl(f.content ?? ""))}`)),
  ];
}

function showSet(r: () => PersistSet): string {
  let set: PersistSet;
  try {
    set = r();
  } catch (e) {
    return `THROWS ${(e as Error).message}\n`;
  }
  return set.files
    .map((f) =>
      f.link !== undefined
        ? `--- ${f.path} -> ${f.link}\n`
        : `--- ${f.path} mode ${f.mode ?? "default"}\n${f.content ?? ""}\n<<< end\n${(f.accepts ?? []).map((a) => `--- read back as in sync too:\n${a}\n<<< end\n`).join("")}`,
    )
    .join("");
}

const showSteps = (steps: Step[]) => steps.map((s) => `## ${s.description}\n${s.run.text}\n${s.undo ? `## undo\n${s.undo.text}\n` : ""}`).join("");
const systemctlSteps = (p: Plan) => showSteps(p.steps.filter((s) => /systemctl/.test(s.run.text) || /systemctl/.test(s.undo?.text ?? "")));

function record(): string {
  const out: string[] = [];
  const add = (title: string, body: string) => out.push(`===== ${title}\n${body}`);
  /** Every input of `cases` on every stack. */
  const eachStack = <I>(what: string, cases: Record<string, I>, render: (i: I, be: Backend) => PersistSet) => {
    for (const [label, i] of Object.entries(cases))
      for (const be of BACKENDS)
        add(
          `${what} ${label} ${be}`,
          showSet(() => render(i, be)),
        );
  };

  // Bridge: the sandbox fixture (br0 with veth port v1); ports not on the host are Ethernet NICs to come.
  const bridgeFx = read(path.join(OBSERVE, "bridge-br0-port-v1.txt"));
  const bridges = {
    plain: bridgeInputsSchema.parse({
      connection: { host: "h" },
      name: "br9",
      persistence: "auto",
      addresses: ["192.0.2.1/24", "2001:db8::1/64"],
      mtu: 1400,
      stp: true,
      forwardDelay: 4,
      helloTime: 2,
      maxAge: 20,
      ageingTime: 300,
      priority: 4096,
      vlanFiltering: true,
      macAddress: "52:54:00:12:34:56",
    }),
    ports: bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br0", persistence: "auto", ports: ["eth5", "eth6"], addresses: ["10.9.0.1/24"] }),
    bare: bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br7", persistence: "auto" }),
    fractional: bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br8", persistence: "auto", forwardDelay: 1.5 }),
    veth: bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br0", persistence: "auto", ports: ["v1"] }),
    takeover: bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br0", persistence: "auto", ports: ["v1p"], takeOverUplink: true }),
  };
  eachStack("bridge", bridges, (b, be) => bridgePersist(b, be, host(bridgeFx, STACK_LINES[be])));

  // VlanSubinterface: the lab fixture (eth1, br10, eth1.10, eth1.20) with the stack facts each stack needs.
  const vlanFx = read(path.join(OBSERVE, "vlan-eth1-v10-v20.txt"));
  const facts = [
    "netfile 3 /etc/systemd/network/10-trunk.network",
    "netdev bridge br10 /etc/systemd/network/05-kvmnet-bridge-br10.netdev",
    "ifsource source /etc/network/interfaces.d/*",
    "ifauto br10",
    "nmversion 1.42.4",
    "nmprofile bridge br10 saved /etc/NetworkManager/system-connections/kvmnet-bridge-br10.nmconnection",
  ];
  const vlan = (o: Record<string, unknown>) => vlanSubinterfaceInputsSchema.parse({ connection: { host: "h" }, parent: "eth1", vlanId: 30, persistence: "auto", ...o });
  const vlans = {
    addressed: vlan({ mtu: 1400, addresses: ["192.0.2.2/24", "2001:db8::2/64"] }),
    qinq: vlan({ name: "v30", protocol: "802.1ad", bridge: "br10" }),
    bare: vlan({ vlanId: 40 }),
    v4only: vlan({ vlanId: 41, addresses: ["198.51.100.2/25"] }),
  };
  eachStack("vlan", vlans, (v, be) => persistVlan(v, be, host(vlanFx, STACK_LINES[be], facts)));
  const refusals: [string, keyof typeof vlans, Backend, string][] = [
    ["networkd (no parent file)", "bare", "networkd", "ifsource source-directory /etc/network/interfaces.d"],
    ["ifupdown (source-directory)", "addressed", "ifupdown", "ifsource source-directory /etc/network/interfaces.d"],
    ["networkmanager (old NM, unmanaged parent)", "qinq", "networkmanager", "nmversion 1.30.0"],
    ["networkmanager (unmanaged)", "bare", "networkmanager", "nmdev eth1 unmanaged"],
  ];
  for (const [title, v, be, fact] of refusals)
    add(
      `vlan refused ${title}`,
      showSet(() => persistVlan(vlans[v], be, host(vlanFx, STACK_LINES[be], [fact]))),
    );

  // TapInterface: the tap fixture (br0, tap0, tap1).
  const tapFx = read(path.join(OBSERVE, "tap-br0-tap0-tap1.txt"));
  const tapFacts = [
    "ifsource source /etc/network/interfaces.d/*",
    "ifauto br0",
    "nmprofile bridge br0 saved /etc/NetworkManager/system-connections/kvmnet-bridge-br0.nmconnection",
  ];
  const tap = (o: Record<string, unknown>) => tapInterfaceInputsSchema.parse({ connection: { host: "h" }, name: "tap9", persistence: "auto", ...o });
  const taps = {
    full: tap({ owner: "1000", group: "100", multiQueue: true, vnetHdr: true, mtu: 1400, bridge: "br0" }),
    bare: tap({}),
    named: tap({ owner: "qemu", group: "kvm", vnetHdr: true }),
  };
  eachStack("tap", taps, (t, be) => persistTap(t, be, host(tapFx, STACK_LINES[be], tapFacts)));
  add(
    "tap refused ifupdown (not sourced)",
    showSet(() => persistTap(taps.bare, "ifupdown", host(tapFx, STACK_LINES.ifupdown, ["ifauto lo"]))),
  );

  // NatNetwork: systemd units on every stack alike.
  const natFx = read(path.join(OBSERVE, "nat-lab-iso-dockerdrop.txt"));
  const nat = (o: Record<string, unknown>) => natNetworkInputsSchema.parse({ connection: { host: "h" }, persistence: "auto", ...o });
  const nats = {
    lab: nat({
      name: "lab",
      subnet: "10.77.0.0/24",
      uplink: "eth0",
      dhcp: { start: "10.77.0.100", end: "10.77.0.150", hosts: [{ mac: "52:54:00:00:77:10", ip: "10.77.0.10", hostname: "web" }] },
      dns: { domain: "lab.test", hosts: [{ ip: "10.77.0.5", hostnames: ["db"] }] },
    }),
    iso: nat({ name: "iso", mode: "isolated", subnet: "10.78.0.0/24", dns: { enabled: false } }),
    fresh: nat({ name: "new", subnet: "10.79.0.0/24", mtu: 1400, dhcp: { start: "10.79.0.10", end: "10.79.0.20" } }),
  };
  for (const [label, n] of Object.entries(nats)) {
    const be: Backend = label === "iso" ? "networkd" : "ifupdown";
    const snap = host(natFx, STACK_LINES[be]);
    add(
      `nat ${label} ${be}`,
      showSet(() => natPersist(n, be, snap)),
    );
    const persisted = host(natFx, [...STACK_LINES[be], ...manifestLines("natNetwork", n.name, natPersist(n, be, snap).files)]);
    add(`nat ${label} delete: the steps that stop units`, systemctlSteps(renderNatPlan(planNatDelete(n, persisted))));
    add(`nat ${label} delete: the persistence core`, showSteps(persistSteps("natNetwork", n.name, { files: [] }, persisted)));
  }

  // PortForward.
  const pfFx = read(path.join(OBSERVE, "pf-two-forwards-v1.txt"));
  const web = portForwardInputsSchema.parse({
    connection: { host: "kvm1.example.net" },
    persistence: "auto",
    protocol: "tcp",
    hostPort: 8080,
    destination: "10.77.0.10",
    destinationPort: 80,
    description: "web on vpf1",
  });
  const pfSet = portForwardPersist(web, "networkmanager", host(pfFx, STACK_LINES.networkmanager));
  add(
    "portForward web networkmanager",
    showSet(() => pfSet),
  );
  const pfPersisted = host(pfFx, [...STACK_LINES.networkmanager, ...manifestLines("portforward", web.name, pfSet.files)]);
  add("portForward web delete", showSteps(renderForwardDelete(planPortForwardDelete(web, pfPersisted)).steps));
  add("portForward web write on a bare host", showSteps(persistSteps("portforward", web.name, pfSet, host(pfFx, STACK_LINES.networkmanager))));

  // PciPassthrough: the lab host's fixture.
  const pciFx = read(path.join(__dirname, "../resources/pciPassthrough/fixtures/lab-pristine.txt"));
  const pci = pciPassthroughStoredSchema.parse({ connection: { host: "h" }, persistence: "auto", address: "0000:00:04.0" });
  const pciSet = pciPersist(pci, "ifupdown", host(pciFx, STACK_LINES.ifupdown));
  add(
    "pci 0000:00:04.0",
    showSet(() => pciSet),
  );
  const pciPersisted = host(pciFx, [...STACK_LINES.ifupdown, ...manifestLines("pcipassthrough", pci.address, pciSet.files)]);
  add("pci disarm on delete", showSteps(pciDisarmSteps(pci, pciPersisted, true)));
  add("pci disarm on runtime", showSteps(pciDisarmSteps({ ...pci, persistence: "runtime" }, pciPersisted, false)));

  // The persistence core on its own: NetworkManager keyfiles written, then removed.
  const vlanNm = persistVlan(vlans.addressed, "networkmanager", host(vlanFx, STACK_LINES.networkmanager, facts));
  add("core: vlan keyfile written", showSteps(persistSteps("vlanSubinterface", "eth1.30", vlanNm, host(vlanFx, STACK_LINES.networkmanager))));
  const vlanNmOn = host(vlanFx, [...STACK_LINES.networkmanager, ...manifestLines("vlanSubinterface", "eth1.30", vlanNm.files)]);
  add("core: vlan keyfile removed", showSteps(persistSteps("vlanSubinterface", "eth1.30", { files: [] }, vlanNmOn)));

  // Commit-confirm: the revert timer is stopped on disarm.
  add("confirm: arm and its undo", showSteps([{ description: "arm", ...armStep("tok123", 30, [literal("true")]) }]));
  add("confirm: confirm script", confirmScript("tok123").text + "\n");
  add("confirm: revert program", revertProgram("tok123", [literal("ip link del dev br0")]));
  return out.join("");
}

describe("persistence golden record", () => {
  it("renders every kind on every stack, the core's steps and every boot-unit stop exactly as recorded", () => {
    const now = record();
    if (process.env.KVMNET_WRITE_GOLDEN === "1") fs.writeFileSync(GOLDEN, now);
    const was = read(GOLDEN);
    // Compared section by section, so a failure names the case.
    const sections = (s: string) => new Map(s.split(/^(?====== )/m).map((x) => [x.split("\n")[0], x]));
    const a = sections(now);
    const b = sections(was);
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [k, v] of a) expect(`${k}\n${v}`).toBe(`${k}\n${b.get(k)}`);
  });
});

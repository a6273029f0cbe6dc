import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { dnsmasqFiles, tableRules, tableScript } from "../../../../provider/resources/natNetwork/files";
import { NatAction, observeNat, planNat, planNatDelete } from "../../../../provider/resources/natNetwork/plan";
import { holdersOf, NAT_DAEMONS_SECTION, natDaemons } from "../../../../provider/resources/natNetwork/observe";
import { renderNatPlan } from "../../../../provider/resources/natNetwork/render";
import { NatNetworkInputs, natNetworkInputsSchema } from "../../../../provider/resources/natNetwork/schema";
import { natOutputs, verifyNat } from "../../../../provider/resources/natNetwork/verify";
import { expectKvmnetThrow, kindAndHint } from "../../../support/expectError";

// Captured from a real sandbox namespace: network "lab" (nat, 10.77.0.0/24, DHCP with a
// static host, DNS domain lab.test, dnsmasq running), network "iso" (isolated,
// 10.78.0.0/24, no DHCP/DNS so no dnsmasq), and Docker's `ip filter FORWARD` chain with
// policy drop added afterwards. The machine has br_netfilter (bridge-nf-call-iptables=1).
const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/nat-lab-iso-dockerdrop.txt"), "utf8");
const snap: HostSnapshot = parseSnapshot(fixture, "fixture");
/** The same host without Docker's chain. */
const noDocker: HostSnapshot = {
  ...snap,
  nftables: (snap.nftables ?? []).filter((o) => !JSON.stringify(o).includes('"table":"filter"') && !JSON.stringify(o).includes('"name":"filter"')),
};
const inputs = (over: Record<string, unknown>): NatNetworkInputs => natNetworkInputsSchema.parse({ connection: { host: "h" }, ...over });
const lab = inputs({
  name: "lab",
  subnet: "10.77.0.0/24",
  uplink: "eth0",
  dhcp: { start: "10.77.0.100", end: "10.77.0.150", hosts: [{ mac: "52:54:00:00:77:10", ip: "10.77.0.10", hostname: "web" }] },
  dns: { domain: "lab.test", hosts: [{ ip: "10.77.0.5", hostnames: ["db"] }] },
});
const iso = inputs({ name: "iso", mode: "isolated", subnet: "10.78.0.0/24", dns: { enabled: false } });
const ops = (actions: NatAction[]) => actions.map((a) => (a.op === "dnsmasq" ? `dnsmasq:${a.how}` : a.op));

const expectError = expectKvmnetThrow;

// The same two networks as a release before issue #14 left them: no rules for a
// PortForward's DNAT, so a forward into the network was rejected by its table.
const fixtureV1 = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/nat-lab-iso-dockerdrop-v1.txt"), "utf8");
const snapV1: HostSnapshot = parseSnapshot(fixtureV1, "fixture-v1");

describe("networks written before forwards were let in", () => {
  it.each([["lab"], ["iso"]])("%s: verify names the missing rules, refresh drops mode, and up rewrites only the table", (name) => {
    const n = name === "lab" ? lab : iso;
    expect(verifyNat(n, snapV1).join()).toMatch(/nft rules desired \[.*forward:in-dnat.*\], current/);
    expect(natOutputs(n, snapV1)).not.toHaveProperty("mode");
    const v1NoDocker = {
      ...snapV1,
      nftables: (snapV1.nftables ?? []).filter((o) => !JSON.stringify(o).includes('"table":"filter"') && !JSON.stringify(o).includes('"name":"filter"')),
    };
    const planned = ops(planNat(n, v1NoDocker, n).actions);
    expect(planned).toContain("applyTable");
    expect(planned.filter((op) => /Bridge|dnsmasq|Address|Forward/.test(op))).toEqual([]);
    expect(verifyNat(n, snap)).toEqual([]);
  });
});

describe("observeNat", () => {
  it("reads bridge, gateway, rules by comment, dnsmasq, ip_forward holder and state", () => {
    const o = observeNat(snap, lab);
    expect(o).toMatchObject({ gatewayPresent: true, dnsmasq: { running: true }, forwardHeld: true, ipForward: "1", sysctlFilesDisablingForward: [] });
    expect(o.bridge).toMatchObject({ isBridge: true, up: true });
    expect(o.tableRules?.slice().sort()).toEqual([
      "forward:bridge-local",
      "forward:in-dnat",
      "forward:in-established",
      "forward:out",
      "forward:out-dnat-reply",
      "forward:reject-from-bridge",
      "forward:reject-to-bridge",
      "input:dhcp",
      "input:dns",
      "postrouting:hairpin-dnat",
      "postrouting:keep-broadcast",
      "postrouting:keep-multicast",
      "postrouting:masquerade",
    ]);
    expect(o.state?.uplink).toBe("eth0");
    expect(observeNat(snap, iso)).toMatchObject({ dnsmasq: undefined, forwardHeld: false });
  });
});

describe("planNat", () => {
  it("creates bridge, address, table, ip_forward hold, dnsmasq and state, in that order", () => {
    const p = planNat(inputs({ name: "new", subnet: "10.79.0.0/24", dhcp: { start: "10.79.0.10", end: "10.79.0.20" } }), noDocker);
    expect(p.guards).toEqual([{ op: "absent", ifname: "kvn-new" }]);
    expect(ops(p.actions)).toEqual(["createBridge", "addAddress", "up", "applyTable", "acquireForward", "dnsmasq:start", "writeState", "recordSysctl"]);
  });

  it("is a no-op (apart from re-reading sysctl files) when the host already matches", () => {
    expect(ops(planNat(lab, noDocker, lab).actions)).toEqual(["recordSysctl"]);
    expect(ops(planNat(iso, noDocker, iso).actions)).toEqual(["forgetSysctl"]);
  });

  it("reloads dnsmasq for hosts changes and restarts it for config changes", () => {
    const moreHosts = {
      ...lab,
      dhcp: { ...(lab.dhcp as object), hosts: [...(lab.dhcp as { hosts: object[] }).hosts, { mac: "52:54:00:00:77:11", ip: "10.77.0.11" }] },
    } as NatNetworkInputs;
    expect(ops(planNat(moreHosts, noDocker, lab).actions)).toEqual(["dnsmasq:reload", "writeState", "recordSysctl"]);
    const dnsHosts = { ...lab, dns: { ...lab.dns, hosts: [{ ip: "10.77.0.6", hostnames: ["db"] }] } };
    expect(ops(planNat(dnsHosts, noDocker, lab).actions)).toEqual(["dnsmasq:reload", "writeState", "recordSysctl"]);
    const lease = { ...lab, dhcp: { ...(lab.dhcp as object), leaseTime: 7200 } } as NatNetworkInputs;
    expect(ops(planNat(lease, noDocker, lab).actions)).toEqual(["dnsmasq:restart", "writeState", "recordSysctl"]);
  });

  it("swaps modes with one table transaction and moves the ip_forward hold", () => {
    const p = planNat({ ...lab, mode: "isolated" }, noDocker, lab);
    expect(ops(p.actions)).toEqual(["applyTable", "releaseForward", "dnsmasq:restart", "writeState", "forgetSysctl"]);
    const apply = p.actions[0] as Extract<NatAction, { op: "applyTable" }>;
    expect(apply.script.split("\n").slice(0, 3)).toEqual(["add table inet kvmnet_nat_lab", "delete table inet kvmnet_nat_lab", "table inet kvmnet_nat_lab {"]);
    expect(apply.previous).toContain("masquerade");
    const steps = renderNatPlan(p).steps;
    // One checked `nft -f` of the whole file: never a moment with both modes' rules, or none.
    expect(steps[0].run.text.match(/nft -f/g)).toHaveLength(1);
    expect(steps[0].run.text).toMatch(/nft -c -f '\/run\/kvmnet\/nat\/lab\/table\.nft' && nft -f '\/run\/kvmnet\/nat\/lab\/table\.nft'/);
    expect(steps[0].undo?.text).toContain("table.nft.previous");
    expect(ops(planNat({ ...iso, mode: "route", uplink: "eth0" }, noDocker, iso).actions)).toEqual(["applyTable", "acquireForward", "writeState", "recordSysctl"]);
  });

  it("repairs drift it finds on the host, whatever the previous inputs say", () => {
    const s = { ...noDocker, nftables: (noDocker.nftables ?? []).filter((o) => !JSON.stringify(o).includes("kvmnet_nat_lab")), pidFiles: {} };
    expect(ops(planNat(lab, s, lab).actions)).toEqual(["applyTable", "dnsmasq:start", "recordSysctl"]);
  });

  it("refuses what would collide or cannot work", () => {
    expectError(() => planNat(lab, noDocker), "Conflict", /bridge kvn-lab already exists/);
    expectError(() => planNat({ ...lab, bridgeName: "eth0" }, noDocker), "Conflict", /eth0 already exists and is not a bridge \(it is veth\)/);
    expectError(() => planNat(inputs({ name: "o", subnet: "10.77.0.0/16" }), noDocker), "Conflict", /overlaps 10\.77\.0\.1\/24 on interface kvn-lab/);
    expectError(() => planNat(inputs({ name: "o", subnet: "198.19.0.0/24" }), noDocker), "Conflict", /on interface eth0/);
    expectError(() => planNat(inputs({ name: "d", subnet: "10.79.0.0/24" }), snap), "Conflict", /ip filter FORWARD has policy drop[\s\S]*DOCKER-USER/);
    expectError(() => planNat(inputs({ name: "d", subnet: "10.79.0.0/24", uplink: "nope0" }), noDocker), "NotFound", /uplink nope0 does not exist/);
    expectError(() => planNat(inputs({ name: "d", subnet: "10.79.0.0/24" }), { ...noDocker, defaultRouteInterface: undefined }), "NotFound", /no default route/);
    const dns = { ...noDocker, dns53Listeners: ["0.0.0.0:53"] };
    expectError(() => planNat(inputs({ name: "d", subnet: "10.79.0.0/24" }), dns), "Conflict", /another DNS server listens on 0\.0\.0\.0:53/);
    // isolated needs no forwarding: Docker's drop is only a warning there; dns off needs no :53.
    expect(() => planNat(inputs({ name: "d", mode: "isolated", subnet: "10.79.0.0/24" }), snap)).not.toThrow();
    expect(() => planNat(inputs({ name: "d", subnet: "10.79.0.0/24", dns: { enabled: false } }), dns)).not.toThrow();
  });
});

/**
 * #14 item 7: a create finding the network already there. The lifecycle passes
 * the inputs as `previous` when its creation record proves the network is this
 * resource's (its create's result was lost); anything else needs adopt.
 */
describe("a network already on the host at create", () => {
  const BRIDGE_HINT =
    "set adopt: true to make it this network's bridge (its gateway address, MTU, table and dnsmasq become the declared ones, and delete removes it), or choose another bridgeName";
  const TABLE_HINT =
    "a network of this name exists that this resource did not create (made by hand, left by a stack that lost it, or by an interrupted create whose inputs changed since): set adopt: true to manage it as this one (its settings become the declared ones), or choose another name";
  /** The fixture without network lab's bridge: its table and state are left. */
  const noBridge: HostSnapshot = { ...noDocker, links: noDocker.links.filter((l) => l.ifname !== "kvn-lab"), addrs: noDocker.addrs.filter((a) => a.ifname !== "kvn-lab") };

  it("refuses what it cannot prove its own, with hints that name adopt", () => {
    expect(kindAndHint(() => planNat(lab, noDocker))).toEqual({ kind: "Conflict", hint: BRIDGE_HINT });
    expect(kindAndHint(() => planNat(lab, noBridge))).toEqual({ kind: "Conflict", hint: TABLE_HINT });
    // A bridge made by hand (here: network iso's, for a network of another name).
    const other = inputs({ name: "other", bridgeName: "kvn-iso", mode: "isolated", subnet: "10.78.0.0/24", dns: { enabled: false } });
    expect(kindAndHint(() => planNat(other, noDocker))).toEqual({ kind: "Conflict", hint: BRIDGE_HINT });
    // adopt does not make an interface that is not a bridge one.
    expect(kindAndHint(() => planNat({ ...lab, bridgeName: "eth0", adopt: true }, noDocker))).toEqual({ kind: "Conflict", hint: "choose another bridgeName" });
  });

  it("converges on its own lost create as an update from itself: nothing to do when the host has it all", () => {
    expect(ops(planNat(lab, noDocker, lab).actions)).toEqual(["recordSysctl"]);
  });

  it.each([
    ["a subnet overlapping a host address", inputs({ name: "o", subnet: "10.77.0.0/16" }), noDocker, "Conflict", "choose a subnet no interface of the host uses"],
    [
      "no uplink for nat",
      inputs({ name: "d", subnet: "10.79.0.0/24" }),
      { ...noDocker, defaultRouteInterface: undefined },
      "NotFound",
      "set uplink to the interface that leads out",
    ],
    [
      "a default route through the network's own bridge",
      inputs({ name: "d", subnet: "10.79.0.0/24", bridgeName: "kvn-iso", adopt: true }),
      { ...noDocker, defaultRouteInterface: "kvn-iso", addrs: noDocker.addrs.filter((a) => a.ifname !== "kvn-iso") },
      "Conflict",
      "set uplink",
    ],
    [
      "Docker's FORWARD drop",
      inputs({ name: "d", subnet: "10.79.0.0/24" }),
      snap,
      "Conflict",
      "allow the bridge in that chain (for Docker: rules in DOCKER-USER, e.g. `iptables -I DOCKER-USER -i <bridge> -j ACCEPT` and the reverse), or use mode isolated",
    ],
    [
      "another DNS server on *:53",
      inputs({ name: "d", subnet: "10.79.0.0/24" }),
      { ...noDocker, dns53Listeners: ["0.0.0.0:53"] },
      "Conflict",
      "make that server bind specific addresses (dnsmasq: bind-interfaces; named: listen-on), or set dns.enabled: false",
    ],
  ] as [string, NatNetworkInputs, HostSnapshot, string, string][])("refuses %s with the right hint", (_what, desired, s, kind, hint) => {
    expect(kindAndHint(() => planNat(desired, s))).toEqual({ kind, hint });
  });

  it("adopts with adopt: true, changing only what differs", () => {
    expect(ops(planNat({ ...lab, adopt: true }, noDocker).actions)).toEqual(["recordSysctl"]);
    expect(planNat({ ...lab, adopt: true, mtu: 1400 }, noDocker).actions).toContainEqual({ op: "setMtu", name: "kvn-lab", mtu: 1400, previous: 1500 });
    const other = inputs({ name: "other", bridgeName: "kvn-iso", mode: "isolated", subnet: "10.78.0.0/24", dns: { enabled: false }, adopt: true });
    const p = planNat(other, noDocker);
    expect(p.guards).toEqual([{ op: "isBridge", ifname: "kvn-iso" }]);
    expect(ops(p.actions)).toEqual(["applyTable", "writeState", "forgetSysctl"]);
    // Its table and state without the bridge: the bridge comes back; the table already says what it should.
    expect(ops(planNat({ ...lab, adopt: true }, noBridge).actions)).toEqual(["createBridge", "addAddress", "up", "recordSysctl"]);
  });
});

describe("dnsmasq under systemd", () => {
  const sd: HostSnapshot = { ...noDocker, systemd: true };
  const fresh = inputs({ name: "new", subnet: "10.79.0.0/24", dhcp: { start: "10.79.0.10", end: "10.79.0.20" } });

  it("runs as a unit of its own in /run/systemd/system where systemd runs, and as a daemon where it does not", () => {
    const p = planNat(fresh, sd);
    const start = p.actions.find((a) => a.op === "dnsmasq");
    expect(start).toMatchObject({ how: "start", systemd: true });
    expect(p.actions.find((a) => a.op === "writeState")).toMatchObject({ state: { dnsmasqUnit: "kvmnet-dnsmasq-new.service" } });
    const text = renderNatPlan(p)
      .steps.map((s) => s.run.text)
      .join("\n");
    expect(text).toContain("/run/systemd/system/kvmnet-dnsmasq-new.service");
    expect(text).toMatch(/Type=forking\nPIDFile=\/run\/kvmnet\/nat\/new\/dnsmasq.pid\nExecStart=dnsmasq --conf-file=\/run\/kvmnet\/nat\/new\/dnsmasq.conf/);
    // systemd's own stop escalates to SIGKILL within the bound a stop waits for (#14), not after its default 90 s.
    expect(text).toContain("TimeoutStopSec=10s");
    expect(text).toContain("systemctl start 'kvmnet-dnsmasq-new.service'");
    expect(text).toContain("journalctl -u 'kvmnet-dnsmasq-new.service'");

    const daemon = planNat(fresh, noDocker);
    expect(daemon.actions.find((a) => a.op === "dnsmasq")).toMatchObject({ how: "start", systemd: false });
    expect(daemon.actions.find((a) => a.op === "writeState")).not.toHaveProperty("state.dnsmasqUnit");
    const daemonText = renderNatPlan(daemon)
      .steps.map((s) => s.run.text)
      .join("\n");
    expect(daemonText).not.toContain("systemctl start");
    expect(daemonText).toContain("dnsmasq --conf-file='/run/kvmnet/nat/new/dnsmasq.conf'");
  });

  it("stops the unit and removes its file on delete, restarting it the same way should a later step fail", () => {
    const withUnit: HostSnapshot = {
      ...sd,
      stateFiles: {
        ...sd.stateFiles,
        "/run/kvmnet/state/natNetwork/lab.json": JSON.stringify({
          ...JSON.parse(sd.stateFiles["/run/kvmnet/state/natNetwork/lab.json"]),
          dnsmasqUnit: "kvmnet-dnsmasq-lab.service",
        }),
      },
    };
    const del = planNatDelete(lab, withUnit);
    expect(del.actions[0]).toEqual({ op: "stopDnsmasq", name: "lab", systemd: true });
    const step = renderNatPlan(del).steps[0];
    expect(step.run.text).toContain("systemctl stop 'kvmnet-dnsmasq-lab.service'; rm -f '/run/systemd/system/kvmnet-dnsmasq-lab.service'; systemctl daemon-reload");
    expect(step.undo?.text).toContain("systemctl start 'kvmnet-dnsmasq-lab.service'");
  });
});

describe("planNatDelete", () => {
  it("stops dnsmasq, deletes the table, releases ip_forward, deletes the bridge, removes files", () => {
    expect(ops(planNatDelete(lab, snap).actions)).toEqual(["stopDnsmasq", "deleteTable", "releaseForward", "deleteBridge", "removeFiles"]);
    expect(ops(planNatDelete(iso, snap).actions)).toEqual(["deleteTable", "deleteBridge", "removeFiles"]);
    expect(planNatDelete(inputs({ name: "gone", subnet: "10.1.0.0/24" }), snap).actions).toEqual([]);
  });

  it("restores ip_forward only when the last holder leaves, under the host lock", () => {
    const release = renderNatPlan(planNatDelete(lab, snap)).steps[2].run.text;
    expect(release).toContain("rm -f '/run/kvmnet/state/ipforward/natNetwork.lab'");
    expect(release).toContain(`grep -vx original`);
    expect(release).toContain("cat '/run/kvmnet/state/ipforward/original' > '/proc/sys/net/ipv4/ip_forward'");
  });
});

describe("rendered files", () => {
  it("binds dnsmasq to the bridge only, with its own files", () => {
    const f = dnsmasqFiles(lab);
    expect(f.conf.split("\n")).toEqual(
      expect.arrayContaining([
        "bind-interfaces",
        "interface=kvn-lab",
        "except-interface=lo",
        "pid-file=/run/kvmnet/nat/lab/dnsmasq.pid",
        "dhcp-leasefile=/run/kvmnet/nat/lab/leases",
        "dhcp-hostsfile=/run/kvmnet/nat/lab/dhcp-hosts",
        "addn-hosts=/run/kvmnet/nat/lab/hosts",
        "dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,3600",
        "domain=lab.test",
        "local=/lab.test/",
      ]),
    );
    expect(f.dhcpHosts).toBe("52:54:00:00:77:10,10.77.0.10,web\n");
    expect(f.dnsHosts).toBe("10.77.0.5 db\n");
    expect(dnsmasqFiles({ ...lab, mode: "isolated" }).conf).toContain("dhcp-option=3\n");
    expect(dnsmasqFiles({ ...lab, dns: { ...lab.dns, enabled: false } }).conf).toContain("port=0\n");
  });

  it("masquerades subnet → not-subnet out of the uplink, leaving multicast and broadcast alone", () => {
    const t = tableScript("lab", tableRules("nat", "kvn-lab", "10.77.0.0/24", "eth0"));
    expect(t).toContain('ip saddr 10.77.0.0/24 ip daddr 224.0.0.0/24 return comment "kvmnet:keep-multicast"');
    expect(t).toContain('ip saddr 10.77.0.0/24 ip daddr 255.255.255.255 return comment "kvmnet:keep-broadcast"');
    expect(t).toContain('oifname "eth0" ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 masquerade');
    expect(tableRules("open", "kvn-lab", "10.77.0.0/24", undefined)).toEqual([]);
    expect(tableRules("route", "kvn-lab", "10.77.0.0/24", "eth0").map((r) => r.comment)).not.toContain("masquerade");
  });
});

describe("verify and outputs", () => {
  it("finds nothing wrong on the host as applied", () => {
    expect(verifyNat(lab, snap)).toEqual([]);
    expect(verifyNat(iso, snap)).toEqual([]);
  });

  it("speaks in nmstate's words", () => {
    expect(verifyNat({ ...lab, mtu: 9000, mode: "route" }, snap)).toEqual([
      "natNetwork lab bridge kvn-lab mtu desired 9000, current 1500",
      expect.stringMatching(/^natNetwork lab nft rules desired \[.*forward:in,.*\], current \[.*masquerade.*\]$/),
    ]);
    expect(verifyNat(inputs({ name: "x", subnet: "10.1.0.0/24" }), snap)).toEqual(["natNetwork x bridge kvn-x desired present, current absent"]);
  });

  it("outputs inputs as applied plus ifindex, dnsmasqPid and warnings; drift drops the drifted fields", () => {
    const o = natOutputs(lab, snap)!;
    expect(o).toMatchObject({
      name: "lab",
      mode: "nat",
      gateway: "10.77.0.1",
      uplink: "eth0",
      tablePresent: true,
      ipForward: true,
      dnsmasqPid: expect.any(Number),
      ifindex: expect.any(Number),
    });
    expect(o.warnings).toEqual([expect.stringMatching(/^br_netfilter/)]);
    expect(natOutputs(iso, snap)!.warnings).toEqual([expect.stringMatching(/ip filter FORWARD has policy drop/), expect.stringMatching(/^br_netfilter/)]);
    const drifted = natOutputs(lab, { ...snap, pidFiles: {}, nftables: [] })!;
    expect(drifted).toMatchObject({ dnsmasqPid: null, tablePresent: false });
    for (const k of ["mode", "dhcp", "dns"]) expect(drifted).not.toHaveProperty(k);
    expect(natOutputs(inputs({ name: "gone", subnet: "10.1.0.0/24" }), snap)).toBeUndefined();
  });
});

describe("a dnsmasq that outlived its network (#14)", () => {
  /** The host of the fixture with the kind's own section: kvmnet dnsmasqs and who holds :53/:67. */
  const withDaemons = (lines: string[]): HostSnapshot => {
    const sections = new Map(noDocker.sections);
    sections.set(NAT_DAEMONS_SECTION, { rc: 0, text: lines.join("\n") });
    return { ...noDocker, sections };
  };
  const fresh = inputs({ name: "fresh", mode: "isolated", subnet: "10.79.0.0/24" });
  const staleOld = ["proc 999 /run/kvmnet/nat/old/dnsmasq.conf", 'sock 10.79.0.1:53 users:(("dnsmasq",pid=999,fd=6))', 'sock 0.0.0.0%if9:67 users:(("dnsmasq",pid=999,fd=4))'];

  it("parses the section: daemons by network, sockets with their processes", () => {
    expect(natDaemons(withDaemons(staleOld))).toEqual({
      daemons: [{ pid: 999, conf: "/run/kvmnet/nat/old/dnsmasq.conf", network: "old" }],
      sockets: [
        { local: "10.79.0.1:53", users: [{ comm: "dnsmasq", pid: 999 }] },
        { local: "0.0.0.0%if9:67", users: [{ comm: "dnsmasq", pid: 999 }] },
      ],
    });
    expect(holdersOf(natDaemons(withDaemons(['sock 10.79.0.1%kvn-x:67 users:(("x",pid=1,fd=3))'])), "10.79.0.1")).toHaveLength(1);
    expect(holdersOf(natDaemons(withDaemons(['sock 10.79.0.10:53 users:(("x",pid=1,fd=3))'])), "10.79.0.1")).toEqual([]);
  });

  it("create names the daemon on its gateway address: pid, whose it is, how to stop it", () => {
    const msg = expectError(
      () => planNat(fresh, withDaemons(staleOld)),
      "Conflict",
      /natNetwork fresh: pid 999 \(the dnsmasq of NatNetwork old, which outlived its network\) holds 10\.79\.0\.1:53/,
    );
    expect(msg).toContain("kill -9 999");
  });

  it("any other process on the gateway's :53 or :67 is named too", () => {
    expectError(() => planNat(fresh, withDaemons(['sock 10.79.0.1:67 users:(("udhcpd",pid=77,fd=3))'])), "Conflict", /pid 77 \(udhcpd\) holds 10\.79\.0\.1:67/);
  });

  it("a leftover dnsmasq of the network's own name is named even off the gateway", () => {
    const same = inputs({ name: "old", mode: "isolated", subnet: "10.79.0.0/24" });
    expectError(() => planNat(same, withDaemons(["proc 999 /run/kvmnet/nat/old/dnsmasq.conf"])), "Conflict", /a dnsmasq of NatNetwork old \(pid 999\) runs without its network/);
  });

  it("leaves alone what is not in the way: another network's dnsmasq elsewhere; a network that runs no dnsmasq", () => {
    expect(() => planNat(fresh, withDaemons(["proc 999 /run/kvmnet/nat/old/dnsmasq.conf", 'sock 10.50.0.1:53 users:(("dnsmasq",pid=999,fd=6))']))).not.toThrow();
    const noDaemon = inputs({ name: "fresh", mode: "isolated", subnet: "10.79.0.0/24", dhcp: false, dns: { enabled: false } });
    expect(() => planNat(noDaemon, withDaemons(staleOld))).not.toThrow();
  });

  it("delete stops a daemon of the network the pid file lost, and the network is not gone while it runs", () => {
    const s = withDaemons(["proc 999 /run/kvmnet/nat/old/dnsmasq.conf"]);
    const old = inputs({ name: "old", mode: "isolated", subnet: "10.79.0.0/24" });
    expect(ops(planNatDelete(old, s).actions)).toEqual(["stopDnsmasq", "removeFiles"]);
    expect(natOutputs(old, s)).toBeDefined();
    expect(natOutputs(old, withDaemons([]))).toBeUndefined();
  });

  it("stop waits for SIGTERM (bounded), escalates to SIGKILL, and fails while the daemon lives", () => {
    const text = renderNatPlan(planNatDelete(lab, snap)).steps[0].run.text;
    expect(text).toMatch(/kill \$pids .*\[ \$i -lt 100 \]/);
    expect(text).toMatch(/ignored SIGTERM for 10 s: SIGKILL' >&2; pids=\$left; kill -KILL \$pids/);
    expect(text).toMatch(/still runs after SIGKILL .*; false; else rm -f '\/run\/kvmnet\/nat\/lab\/dnsmasq\.pid'; fi/);
    expect(text).toContain("grep -lzxF -e '--conf-file=/run/kvmnet/nat/lab/dnsmasq.conf' /proc/[0-9]*/cmdline");
  });
});

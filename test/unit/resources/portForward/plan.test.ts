/**
 * PortForward observe/plan/render/verify against a captured snapshot.
 *
 * Fixture pf-two-forwards-v1.txt: the observe script's output from a fresh
 * network namespace (bridge brpf 10.77.0.1/24, eth0 198.19.0.11/24,
 * ip_forward 0) holding two tables this module rendered and nft 1.0.6 loaded:
 *   tcp 8080 (any address) → 10.77.0.10:80, hairpin, description "web on vpf1"
 *   udp 198.19.0.11:5000-5002 → 10.77.0.10:6000-6002, sources 198.19.0.0/24 + 192.0.2.7, no hairpin
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { isKvmnetError } from "../../../../provider/errors";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { forwardWarnings, IP_FORWARD_WARNING, portForwardInputsSchema, portForwardOutputs } from "../../../../provider/resources/portForward";
import { keysOverlap, listForwardTables, observeForward } from "../../../../provider/resources/portForward/observe";
import { desiredTable, destinationSubnet, planPortForward, planPortForwardDelete } from "../../../../provider/resources/portForward/plan";
import { renderForwardDelete, renderForwardPlan, renderTable } from "../../../../provider/resources/portForward/render";
import { PortForwardInputs } from "../../../../provider/resources/portForward/schema";
import { verifyPortForward } from "../../../../provider/resources/portForward/verify";
import { kindAndHint } from "../../../support/expectError";

const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/pf-two-forwards-v1.txt"), "utf8");
const snap = parseSnapshot(fixture, "fixture");
const connection = { host: "kvm1.example.net" };
const input = (v: Record<string, unknown>): PortForwardInputs => portForwardInputsSchema.parse({ connection, ...v });
const web = input({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 80, description: "web on vpf1" });
const dns = input({
  protocol: "udp",
  hostPort: "5000-5002",
  destination: "10.77.0.10",
  destinationPort: 6000,
  hostAddress: "198.19.0.11",
  sourceCidrs: ["198.19.0.0/24", "192.0.2.7/32"],
  hairpin: false,
});

function conflictOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (isKvmnetError(e) && e.kind === "Conflict") return e.message;
    throw e;
  }
  throw new Error("no conflict");
}

function expectConflict(f: () => unknown) {
  try {
    f();
  } catch (e) {
    if (isKvmnetError(e) && e.kind === "Conflict") return e;
    throw e;
  }
  throw new Error("no conflict");
}

/** A copy of the snapshot with the rules of `table` in `chain` transformed. */
function editRules(s: HostSnapshot, table: string, edit: (rule: Record<string, any>) => Record<string, any> | undefined): HostSnapshot {
  const nftables = (s.nftables ?? []).flatMap((item) => {
    const r = item.rule as Record<string, any> | undefined;
    if (!r || r.table !== table) return [item];
    const e = edit(JSON.parse(JSON.stringify(r)));
    return e ? [{ rule: e }] : [];
  });
  return { ...s, nftables };
}

describe("observe", () => {
  it("lists our tables by identity", () => {
    expect(listForwardTables(snap)).toEqual([
      { table: "kvmnet_pf_tcp_any_8080", protocol: "tcp", hostAddress: undefined, hostRange: { first: 8080, last: 8080 } },
      { table: "kvmnet_pf_udp_198_19_0_11_5000_5002", protocol: "udp", hostAddress: "198.19.0.11", hostRange: { first: 5000, last: 5002 } },
    ]);
  });

  it("parses every field back from the rules", () => {
    expect(observeForward(snap, "kvmnet_pf_tcp_any_8080")).toMatchObject({
      destination: "10.77.0.10",
      destinationPort: 80,
      sourceCidrs: [],
      hairpin: true,
      description: "web on vpf1",
      masqueradeSubnet: "10.77.0.0/24",
      forwardAccept: true,
      owner: "kvm1.example.net/portforward/tcp_any_8080",
      anomalies: [],
    });
    expect(observeForward(snap, "kvmnet_pf_udp_198_19_0_11_5000_5002")).toMatchObject({
      destination: "10.77.0.10",
      destinationPort: "6000-6002",
      sourceCidrs: ["192.0.2.7/32", "198.19.0.0/24"],
      hairpin: false,
      description: undefined,
      anomalies: [],
    });
    expect(observeForward(snap, "kvmnet_pf_tcp_any_9999")).toBeUndefined();
  });

  it.each([
    [{ protocol: "tcp", hostRange: { first: 8000, last: 8080 } }, { protocol: "tcp", hostRange: { first: 8080, last: 8090 }, hostAddress: "1.2.3.4" }, true],
    [{ protocol: "tcp", hostRange: { first: 8000, last: 8079 } }, { protocol: "tcp", hostRange: { first: 8080, last: 8090 } }, false],
    [{ protocol: "udp", hostRange: { first: 8080, last: 8080 } }, { protocol: "tcp", hostRange: { first: 8080, last: 8080 } }, false],
    [{ protocol: "tcp", hostRange: { first: 80, last: 80 }, hostAddress: "1.2.3.4" }, { protocol: "tcp", hostRange: { first: 80, last: 80 }, hostAddress: "1.2.3.5" }, false],
  ] as const)("keysOverlap(%j, %j) = %s", (a, b, want) => {
    expect(keysOverlap(a, b)).toBe(want);
  });
});

describe("plan", () => {
  it("finds the destination's subnet for hairpin masquerade", () => {
    expect(destinationSubnet(snap, "10.77.0.10")).toBe("10.77.0.0/24");
    expect(destinationSubnet(snap, "172.16.0.5")).toBeUndefined();
  });

  it.each([
    [
      { protocol: "tcp", hostPort: 8080, destination: "10.77.0.11" },
      /tcp port 8080 on every address is already forwarded by PortForward kvm1\.example\.net\/portforward\/tcp_any_8080 .*→ 10\.77\.0\.10:80 \("web on vpf1"\)/,
    ],
    [
      { protocol: "tcp", hostPort: "8000-8100", destination: "10.77.0.11", hostAddress: "10.77.0.1" },
      /tcp port 8000-8100 on 10\.77\.0\.1 is already forwarded by PortForward .*tcp_any_8080/,
    ],
    [{ protocol: "udp", hostPort: 5002, destination: "10.77.0.11" }, /udp port 5002 on every address is already forwarded by .*udp_198_19_0_11_5000_5002/],
    [{ protocol: "udp", hostPort: "4990-5000", destination: "10.77.0.11", hostAddress: "198.19.0.11" }, /already forwarded/],
  ])("refuses %j as a Conflict naming the owner", (v, re) => {
    expect(conflictOf(() => planPortForward(input(v), snap))).toMatch(re);
  });

  const MINE_HINT =
    "that table has this forward's identity: set adopt: true to manage it as this forward (its rules become the declared ones; e.g. a table made by hand, or left by an interrupted create whose inputs changed since), or remove the other forward first";
  const OTHER_HINT = "choose another host port or host address, or remove the other forward first";

  it("refuses a table of its own identity it does not own, with a hint naming adopt; another forward's with one that does not", () => {
    expect(expectConflict(() => planPortForward({ ...web, destination: "10.77.0.12" }, snap)).hint).toBe(MINE_HINT);
    expect(expectConflict(() => planPortForward(input({ protocol: "tcp", hostPort: "8079-8080", destination: "10.77.0.11" }), snap)).hint).toBe(OTHER_HINT);
    // adopt takes only its own identity's table: another forward's overlapping ports stay a Conflict.
    expect(expectConflict(() => planPortForward(input({ protocol: "udp", hostPort: 5002, destination: "10.77.0.11", adopt: true }), snap)).hint).toBe(OTHER_HINT);
  });

  it("adopts a table of its identity, restoring it as it was when the rewrite fails", () => {
    const p = planPortForward({ ...web, connection: { host: "10.0.0.5" }, destination: "10.77.0.12", adopt: true }, snap);
    expect(p).toMatchObject({ table: "kvmnet_pf_tcp_any_8080", exists: true, desired: { destination: "10.77.0.12", owner: "10.0.0.5/portforward/tcp_any_8080" } });
    expect(p.previous).toEqual(desiredTable(web, snap));
    const rendered = renderForwardPlan(p);
    expect(rendered.steps[0].description).toBe("rewrite nft table ip kvmnet_pf_tcp_any_8080");
    expect(rendered.steps[0].undo?.text).toContain(renderTable(desiredTable(web, snap)));
    expect(rendered.guards.map((g) => g.message).join("\n")).not.toMatch(/nft table ip kvmnet_pf_tcp_any_8080 appeared/);
  });

  it("takes over the table of its own lost create (the lifecycle passes the inputs as previous)", () => {
    const p = planPortForward(web, snap, web);
    expect(p).toMatchObject({ exists: true, desired: desiredTable(web, snap), previous: desiredTable(web, snap) });
  });

  it("allows the other protocol, another address, or ports beside", () => {
    expect(planPortForward(input({ protocol: "udp", hostPort: 8080, destination: "10.77.0.10" }), snap).exists).toBe(false);
    expect(planPortForward(input({ protocol: "udp", hostPort: 5000, destination: "10.77.0.10", hostAddress: "10.77.0.1" }), snap).exists).toBe(false);
    expect(planPortForward(input({ protocol: "udp", hostPort: 5003, destination: "10.77.0.10" }), snap).exists).toBe(false);
  });

  it("rewrites its own table on update, restoring the old one on failure", () => {
    const changed = { ...web, destination: "10.77.0.12" };
    const p = planPortForward(changed, snap, web);
    expect(p).toMatchObject({ table: "kvmnet_pf_tcp_any_8080", exists: true, desired: { destination: "10.77.0.12" }, previous: { destination: "10.77.0.10" } });
    const script = renderForwardPlan(p).steps[0].run.text;
    expect(script).toContain("table ip kvmnet_pf_tcp_any_8080 {}\ndelete table ip kvmnet_pf_tcp_any_8080\ntable ip kvmnet_pf_tcp_any_8080 {");
    expect(script).toMatch(/nft -c -f - && printf .* \| nft -f -$/s);
  });

  it("refuses without nft, saying what to install", () => {
    expect(() => planPortForward(web, { ...snap, nftables: undefined })).toThrow(/Unsupported: the host has no nft command/);
    expect(kindAndHint(() => planPortForward(web, { ...snap, nftables: undefined }))).toEqual({
      kind: "Unsupported",
      hint: "install nftables (Debian/Ubuntu: apt-get install nftables)",
    });
  });

  it("deletes only an existing table", () => {
    expect(renderForwardDelete(planPortForwardDelete(web, snap)).steps.map((s) => s.run.text)).toEqual(["nft delete table ip 'kvmnet_pf_tcp_any_8080'"]);
    expect(renderForwardDelete(planPortForwardDelete(input({ protocol: "tcp", hostPort: 1, destination: "10.0.0.1" }), snap)).steps).toEqual([]);
  });
});

describe("render", () => {
  it("writes what the fixture's tables were loaded from", () => {
    const t = renderTable(desiredTable(web, snap));
    expect(t).toContain('fib daddr type local tcp dport 8080 dnat ip to 10.77.0.10:80 comment "web on vpf1"');
    expect(t).toContain("ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat ip to 10.77.0.10:80\n");
    expect(t).toContain("ip saddr 10.77.0.0/24 ip daddr 10.77.0.10 tcp dport 80 ct status dnat masquerade");
    const u = renderTable(desiredTable(dns, snap));
    expect(u).toContain(
      "ip daddr 198.19.0.11 ip saddr { 198.19.0.0/24, 192.0.2.7/32 } udp dport 5000-5002 dnat ip to 10.77.0.10 : udp dport map { 5000 : 6000, 5001 : 6001, 5002 : 6002 }",
    );
    expect(u).not.toContain("chain output");
    expect(u).not.toContain("masquerade");
  });

  it("keeps the port for equal ranges", () => {
    expect(renderTable(desiredTable(input({ protocol: "tcp", hostPort: "8000-8010", destination: "10.77.0.10" }), snap))).toContain("tcp dport 8000-8010 dnat ip to 10.77.0.10\n");
  });

  it("refuses values that could break out of nft text even if a schema let them through", () => {
    const t = desiredTable(web, snap);
    expect(() => renderTable({ ...t, destination: "10.0.0.1 accept;" })).toThrow(TypeError);
    expect(() => renderTable({ ...t, description: 'x" ; drop' })).toThrow(TypeError);
  });
});

describe("verify and outputs", () => {
  it("match what was applied", () => {
    expect(verifyPortForward(web, snap)).toEqual([]);
    expect(verifyPortForward(dns, snap)).toEqual([]);
    const { connection: _c, name: _n, ...rest } = dns;
    expect(portForwardOutputs(dns, snap)).toEqual({
      connection,
      ...rest,
      table: "kvmnet_pf_udp_198_19_0_11_5000_5002",
      warnings: [IP_FORWARD_WARNING],
      drift: [],
    });
  });

  it("warns when ip_forward is 0 or hairpin has no subnet", () => {
    expect(forwardWarnings(web, { ...snap, sysctls: { "ipv4/ip_forward": "1" } })).toEqual([]);
    expect(forwardWarnings(input({ protocol: "tcp", hostPort: 1, destination: "172.16.0.5" }), { ...snap, sysctls: { "ipv4/ip_forward": "1" } })).toEqual([
      expect.stringMatching(/no host address is on a subnet holding 172\.16\.0\.5/),
    ]);
  });

  it("shows a rule changed by hand as drift", () => {
    const t = "kvmnet_pf_tcp_any_8080";
    const retargeted = editRules(snap, t, (r) => {
      if (r.chain === "prerouting") r.expr[r.expr.length - 1].dnat = { addr: "10.77.0.99", port: 8081 };
      return r;
    });
    expect(portForwardOutputs(web, retargeted)).toMatchObject({
      destination: "10.77.0.99",
      destinationPort: 8081,
      drift: [expect.stringMatching(/destination desired 10\.77\.0\.10, current 10\.77\.0\.99/), expect.stringMatching(/destinationPort desired 80, current 8081/)],
    });
    const noHairpin = editRules(snap, t, (r) => (r.chain === "output" ? undefined : r));
    expect(portForwardOutputs(web, noHairpin)).toMatchObject({ hairpin: false, drift: ["portforward tcp_any_8080 hairpin desired true, current false"] });
    const noComment = editRules(snap, t, (r) => ({ ...r, comment: undefined }));
    expect(portForwardOutputs(web, noComment)).not.toHaveProperty("description");
    const gone = editRules(snap, t, (r) => (r.chain === "prerouting" ? undefined : r));
    expect(portForwardOutputs(web, gone)).toMatchObject({
      destination: "10.77.0.10",
      drift: expect.arrayContaining(["portforward tcp_any_8080 prerouting has 0 DNAT rules, expected 1"]),
    });
  });

  // Issue #14: the engine creates a NatNetwork and its forwards at once, so the
  // network's subnet can appear (or go) between a forward's plan and its read-back.
  it("is not judged against a network that came or went around it", () => {
    const noBridgeAddress = { ...snap, addrs: snap.addrs.map((a) => (a.ifname === "brpf" ? { ...a, addr_info: [] } : a)) };
    expect(desiredTable(web, noBridgeAddress).masqueradeSubnet).toBeUndefined();
    expect(verifyPortForward(web, noBridgeAddress)).toEqual([]);
    expect(portForwardOutputs(web, noBridgeAddress)?.drift).toEqual([]);
  });

  it("reports a deleted table as gone", () => {
    const s = { ...snap, nftables: (snap.nftables ?? []).filter((i) => JSON.stringify(i).indexOf("kvmnet_pf_tcp_any_8080") < 0) };
    expect(portForwardOutputs(web, s)).toBeUndefined();
  });
});

describe("overlap guard (run by sh + awk against a stand-in nft)", () => {
  const tables = "table ip kvmnet_pf_tcp_any_8080\ntable ip kvmnet_pf_udp_198_19_0_11_5000_5002\ntable ip other\n";
  function guardPasses(v: Record<string, unknown>, previous?: PortForwardInputs): boolean {
    const empty = { ...snap, nftables: [] };
    const plan = renderForwardPlan(planPortForward(input(v), previous ? snap : empty, previous));
    const checks = plan.guards.filter((g) => g.kind === "Conflict").map((g) => `{ ${g.test.text}; } || exit 1`);
    const t = JSON.stringify(tables);
    const script = `nft() { if [ "$2" = table ]; then printf '%b' ${t} | grep -qx "table ip $4"; else printf '%b' ${t}; fi; }\n${checks.join("\n")}`;
    try {
      execFileSync("sh", ["-c", script], { stdio: "pipe" });
      return true;
    } catch {
      return false;
    }
  }
  it.each([
    [{ protocol: "tcp", hostPort: 8080, destination: "10.0.0.1" }, false],
    [{ protocol: "tcp", hostPort: "8000-8080", destination: "10.0.0.1", hostAddress: "1.2.3.4" }, false],
    [{ protocol: "tcp", hostPort: 8081, destination: "10.0.0.1" }, true],
    [{ protocol: "udp", hostPort: 8080, destination: "10.0.0.1" }, true],
    [{ protocol: "udp", hostPort: 5002, destination: "10.0.0.1" }, false],
    [{ protocol: "udp", hostPort: 5001, destination: "10.0.0.1", hostAddress: "198.19.0.11" }, false],
    [{ protocol: "udp", hostPort: 5001, destination: "10.0.0.1", hostAddress: "198.19.0.12" }, true],
  ])("%j passes: %s", (v, want) => {
    expect(guardPasses(v)).toBe(want);
  });
  it("ignores the forward's own table on update", () => {
    expect(guardPasses({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.12" }, web)).toBe(true);
  });
});

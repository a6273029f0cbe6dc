/**
 * PortForward against a real sandbox host, proven with real traffic.
 *
 * The test network is built by hand (NatNetwork is a separate resource): in
 * the host a bridge brpf 10.77.0.1/24 with two guests, vpf1 = 10.77.0.10 and
 * vpf2 = 10.77.0.20, both routing via 10.77.0.1; ip_forward on in the host's
 * private netns. Clients run in the upstream namespace (198.19.0.1, plus a
 * second address 198.19.0.99 outside the allowlists) and reach the host's
 * uplink address 198.19.0.11. Guest listeners (socat) answer with the peer
 * address they saw, then echo the payload.
 */
import { closeAllConnections } from "../../provider/host";
import { IP_FORWARD_WARNING, portForwardProvider } from "../../provider/resources/portForward";
import { HOSTILE_STRINGS } from "../../testbed/hostile";
import { assertSandboxSupported, Fleet, SandboxHost, snapshotHost, startFleet } from "../../testbed/fleet";
import { expectKvmnetError } from "../support/expectError";

type Guest = Awaited<ReturnType<Fleet["addGuest"]>>;

let fleet: Fleet;
let h: SandboxHost;
let g1: Guest;
let g2: Guest;
let baseline: unknown;
/** Background listeners we started: [exec of their namespace, pid]. */
const listeners: [Guest["exec"], number][] = [];

const SECOND_UPSTREAM = "198.19.0.99";

beforeAll(async () => {
  await assertSandboxSupported();
  fleet = await startFleet(1);
  [h] = fleet.hosts;
  await h.exec("ip link add brpf type bridge && ip addr add 10.77.0.1/24 dev brpf && ip link set brpf up && sysctl -qw net.ipv4.ip_forward=1");
  g1 = await fleet.addGuest(h, "vpf1");
  g2 = await fleet.addGuest(h, "vpf2");
  await h.exec("ip link set vpf1 master brpf && ip link set vpf2 master brpf");
  await g1.exec("ip addr add 10.77.0.10/24 dev eth0 && ip route add default via 10.77.0.1");
  await g2.exec("ip addr add 10.77.0.20/24 dev eth0 && ip route add default via 10.77.0.1");
  await fleet.upstream.exec(`ip addr add ${SECOND_UPSTREAM}/24 dev lan0`);
  // Listeners: TCP 80, 9200-9202 and UDP 6000 on vpf1; each reply starts with the peer address.
  for (const spec of ["TCP-LISTEN:80", "TCP-LISTEN:9200", "TCP-LISTEN:9201", "TCP-LISTEN:9202", "UDP-RECVFROM:6000"]) {
    await listen(g1.exec, spec);
  }
  baseline = await snapshotHost(h);
});

afterAll(async () => {
  closeAllConnections();
  for (const [exec, pid] of listeners) await exec(`kill ${pid}`, { allowFail: true }).catch(() => undefined);
  if (h) await h.exec("ip link del brpf", { allowFail: true }).catch(() => undefined);
  await fleet?.stop();
});

async function listen(exec: Guest["exec"], spec: string) {
  const r = await exec(`setsid socat ${spec},reuseaddr,fork SYSTEM:'echo peer=$SOCAT_PEERADDR; cat' </dev/null >/dev/null 2>&1 & echo $!`);
  listeners.push([exec, Number(r.stdout.trim())]);
}

function conn() {
  return { host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint };
}

/** check → create, the way the engine calls them. */
async function create(props: Record<string, unknown>) {
  const checked = await portForwardProvider.check({}, { connection: conn(), ...props });
  if (checked.failures?.length) throw new Error(JSON.stringify(checked.failures));
  return { ...(await portForwardProvider.create(checked.inputs)), inputs: checked.inputs };
}

/** Send `payload` from `exec`'s namespace; returns what came back ("" when refused / timed out). */
async function talk(exec: Guest["exec"], proto: "tcp" | "udp", target: string, payload: string, bind?: string): Promise<string> {
  const addr = `${proto.toUpperCase()}:${target}${bind ? `,bind=${bind}` : ""}`;
  const r = await exec(`echo ${payload} | timeout 6 socat -T2 -t2 - ${addr}`, { allowFail: true });
  return r.stdout;
}

async function nftTables(): Promise<string[]> {
  const r = await h.exec("nft -j list tables");
  return (JSON.parse(r.stdout).nftables as Record<string, any>[]).filter((i) => i.table).map((i) => i.table.name);
}

describe("PortForward with real traffic", () => {
  it("forwards tcp and udp from upstream to a guest, and delete leaves no trace", async () => {
    const web = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 80, description: "web on vpf1" });
    expect(web.id).toBe(`${h.address}/portforward/tcp_any_8080`);
    expect(web.outs).toMatchObject({
      protocol: "tcp",
      hostPort: 8080,
      destination: "10.77.0.10",
      destinationPort: 80,
      hairpin: true,
      sourceCidrs: [],
      description: "web on vpf1",
      table: "kvmnet_pf_tcp_any_8080",
      warnings: [],
      drift: [],
    });
    const dns = await create({ protocol: "udp", hostPort: 5000, destination: "10.77.0.10", destinationPort: 6000 });
    expect(dns.outs).toMatchObject({ table: "kvmnet_pf_udp_any_5000", destinationPort: 6000 });
    expect(await nftTables()).toEqual(expect.arrayContaining(["kvmnet_pf_tcp_any_8080", "kvmnet_pf_udp_any_5000"]));

    // The guest sees the real client (no masquerade from outside) and the payload makes the round trip.
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8080`, "hello-tcp")).toBe("peer=198.19.0.1\nhello-tcp\n");
    expect(await talk(fleet.upstream.exec, "udp", `${h.uplinkAddress}:5000`, "hello-udp")).toContain("hello-udp");

    // P1: a read right after create finds exactly the outputs.
    expect(await portForwardProvider.read(web.id, web.outs)).toEqual({ id: web.id, props: web.outs, inputs: web.inputs });

    await portForwardProvider.delete(web.id, web.outs);
    await portForwardProvider.delete(dns.id, dns.outs);
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8080`, "after")).toBe("");
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("maps a port range onto a range", async () => {
    const r = await create({ protocol: "tcp", hostPort: "9100-9102", destination: "10.77.0.10", destinationPort: 9200 });
    expect(r.outs).toMatchObject({ hostPort: "9100-9102", destinationPort: "9200-9202", drift: [] });
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:9101`, "range")).toBe("peer=198.19.0.1\nrange\n");
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:9102`, "range2")).toBe("peer=198.19.0.1\nrange2\n");
    await portForwardProvider.delete(r.id, r.outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("forwards only clients inside sourceCidrs", async () => {
    const r = await create({ protocol: "tcp", hostPort: 8090, destination: "10.77.0.10", destinationPort: 80, sourceCidrs: ["198.19.0.1"] });
    expect(r.outs).toMatchObject({ sourceCidrs: ["198.19.0.1/32"] });
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8090`, "inside", "198.19.0.1")).toBe("peer=198.19.0.1\ninside\n");
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8090`, "outside", SECOND_UPSTREAM)).toBe("");
    // Widening the allowlist is an in-place update.
    const news = (await portForwardProvider.check(r.outs, { ...r.inputs, sourceCidrs: ["198.19.0.0/24"] })).inputs;
    expect(await portForwardProvider.diff(r.id, r.outs, news)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    const { outs } = await portForwardProvider.update(r.id, r.outs, news);
    expect(outs).toMatchObject({ sourceCidrs: ["198.19.0.0/24"], drift: [] });
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8090`, "now-inside", SECOND_UPSTREAM)).toBe(`peer=${SECOND_UPSTREAM}\nnow-inside\n`);
    await portForwardProvider.delete(r.id, outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("hairpins from a guest of the same network and from the host itself", async () => {
    const r = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 80 });
    // vpf2 → host address → vpf1: masqueraded to the gateway, so vpf1 answers through the host.
    expect(await talk(g2.exec, "tcp", `${h.uplinkAddress}:8080`, "from-guest")).toBe("peer=10.77.0.1\nfrom-guest\n");
    expect(await talk(h.exec.bind(h), "tcp", `${h.uplinkAddress}:8080`, "from-host")).toMatch(/^peer=[\d.]+\nfrom-host\n$/);
    expect(await talk(h.exec.bind(h), "tcp", `10.77.0.1:8080`, "via-bridge-address")).toMatch(/via-bridge-address/);

    // hairpin: false → only outside clients are forwarded.
    const news = (await portForwardProvider.check(r.outs, { ...r.inputs, hairpin: false })).inputs;
    const { outs } = await portForwardProvider.update(r.id, r.outs, news);
    expect(outs).toMatchObject({ hairpin: false, drift: [] });
    expect(await talk(h.exec.bind(h), "tcp", `${h.uplinkAddress}:8080`, "from-host")).toBe("");
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8080`, "outside")).toBe("peer=198.19.0.1\noutside\n");
    await portForwardProvider.delete(r.id, outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("refuses a second forward of the same packets as a Conflict naming the owner", async () => {
    const first = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 80, description: "first" });
    const owner = `${h.address}/portforward/tcp_any_8080`;
    const esc = owner.replace(/\./g, "\\.");
    await expectKvmnetError(create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.20" }), "Conflict", new RegExp(`already forwarded by PortForward ${esc} .*"first"`));
    await expectKvmnetError(create({ protocol: "tcp", hostPort: "8000-8100", destination: "10.77.0.20" }), "Conflict", new RegExp(`already forwarded by PortForward ${esc}`));
    await expectKvmnetError(create({ protocol: "tcp", hostPort: 8080, hostAddress: h.uplinkAddress, destination: "10.77.0.20" }), "Conflict", new RegExp(esc));
    // Another protocol on the same port is another forward.
    const udp = await create({ protocol: "udp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 6000 });
    expect(await talk(fleet.upstream.exec, "udp", `${h.uplinkAddress}:8080`, "udp-same-port")).toContain("udp-same-port");
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8080`, "tcp-same-port")).toBe("peer=198.19.0.1\ntcp-same-port\n");
    await portForwardProvider.delete(udp.id, udp.outs);
    await portForwardProvider.delete(first.id, first.outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("converges when a create's result was lost (P10): one table, the forward works, delete leaves no trace", async () => {
    const props = { protocol: "tcp", hostPort: 8090, destination: "10.77.0.10", destinationPort: 80 };
    // The host applied this create, but the engine never saw its result (the provider
    // died after the host script ran to its end): it creates again with the same inputs.
    await create(props);
    const again = await create(props);
    expect(again.id).toBe(`${h.address}/portforward/tcp_any_8090`);
    expect(again.outs).toMatchObject({ table: "kvmnet_pf_tcp_any_8090", destination: "10.77.0.10", destinationPort: 80, drift: [] });
    expect((await nftTables()).filter((t) => t.startsWith("kvmnet_pf_"))).toEqual(["kvmnet_pf_tcp_any_8090"]);
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8090`, "after-retry")).toBe("peer=198.19.0.1\nafter-retry\n");
    expect(await portForwardProvider.read(again.id, again.outs)).toEqual({ id: again.id, props: again.outs, inputs: again.inputs });
    // The same identity with other inputs is not provably this create's: a Conflict whose hint names adopt.
    await expectKvmnetError(create({ ...props, destination: "10.77.0.20" }), "Conflict", /already forwarded by PortForward [^ ]*tcp_any_8090[\s\S]*hint: .*set adopt: true/);
    await portForwardProvider.delete(again.id, again.outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("adopts a table of its identity made by hand only with adopt: true (P3)", async () => {
    await h.exec(
      "nft -f - <<'EOF'\ntable ip kvmnet_pf_tcp_any_8091 {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local tcp dport 8091 dnat ip to 10.77.0.20:80\n  }\n}\nEOF",
    );
    const props = { protocol: "tcp", hostPort: 8091, destination: "10.77.0.10", destinationPort: 80 };
    await expectKvmnetError(create(props), "Conflict", /tcp port 8091 on every address is already forwarded by table ip kvmnet_pf_tcp_any_8091[\s\S]*hint: .*set adopt: true/);
    const adopted = await create({ ...props, adopt: true });
    expect(adopted.outs).toMatchObject({ table: "kvmnet_pf_tcp_any_8091", destination: "10.77.0.10", destinationPort: 80, adopt: true, drift: [] });
    expect((await nftTables()).filter((t) => t.startsWith("kvmnet_pf_"))).toEqual(["kvmnet_pf_tcp_any_8091"]);
    expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8091`, "adopted")).toBe("peer=198.19.0.1\nadopted\n");
    await portForwardProvider.delete(adopted.id, adopted.outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("lets exactly one of two overlapping forwards created at once win", async () => {
    // Both may observe the host before either applies: the guard under the host lock decides.
    const results = await Promise.allSettled([
      create({ protocol: "tcp", hostPort: 7000, destination: "10.77.0.10", destinationPort: 80 }),
      create({ protocol: "tcp", hostPort: "6990-7010", hostAddress: h.uplinkAddress, destination: "10.77.0.20" }),
    ]);
    const won = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof create>>> => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect({ won: won.length, lost: lost.map((l) => (l.reason as { kind?: string }).kind) }).toEqual({ won: 1, lost: ["Conflict"] });
    expect((lost[0].reason as Error).message).toMatch(/kvmnet_pf_tcp_(any_7000|198_19_0_11_6990_7010)/);
    await portForwardProvider.delete(won[0].value.id, won[0].value.outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("shows drift on read and repairs it on update", async () => {
    const r = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", destinationPort: 80, description: "drift" });
    // A rule changed by hand: the hairpin (output) chain removed.
    await h.exec("nft flush chain ip kvmnet_pf_tcp_any_8080 output && nft delete chain ip kvmnet_pf_tcp_any_8080 output");
    const read = await portForwardProvider.read(r.id, r.outs);
    expect(read.props).toMatchObject({ hairpin: false, drift: ["portforward tcp_any_8080 hairpin desired true, current false"] });
    expect(read.inputs).toMatchObject({ hairpin: false });
    expect(await portForwardProvider.diff(r.id, read.props, r.inputs)).toMatchObject({ changes: true, replaces: [] });
    const { outs } = await portForwardProvider.update(r.id, read.props, r.inputs);
    expect(outs).toMatchObject({ hairpin: true, drift: [] });
    expect(await talk(h.exec.bind(h), "tcp", `${h.uplinkAddress}:8080`, "repaired")).toMatch(/repaired/);
    // The table deleted by hand: read reports the forward gone.
    await h.exec("nft delete table ip kvmnet_pf_tcp_any_8080");
    expect(await portForwardProvider.read(r.id, outs)).toEqual({ id: "", props: {} });
    await portForwardProvider.delete(r.id, outs); // nothing left to delete: a no-op
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("warns when ip_forward is off and leaves it off", async () => {
    await h.exec("sysctl -qw net.ipv4.ip_forward=0");
    try {
      const r = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10" });
      expect(r.outs.warnings).toEqual([IP_FORWARD_WARNING]);
      expect((await h.exec("cat /proc/sys/net/ipv4/ip_forward")).stdout.trim()).toBe("0");
      await portForwardProvider.delete(r.id, r.outs);
    } finally {
      await h.exec("sysctl -qw net.ipv4.ip_forward=1");
    }
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it('persistence "auto" on a host without a network stack persists nothing; an explicit backend is refused', async () => {
    const r = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", persistence: "auto" });
    expect(r.outs).toMatchObject({ persistence: "auto", persistedBy: "runtime", persistenceDrift: [] });
    expect(await portForwardProvider.read(r.id, r.outs)).toEqual({ id: r.id, props: r.outs, inputs: r.inputs });
    await portForwardProvider.delete(r.id, r.outs);
    const props = (await portForwardProvider.check({}, { connection: conn(), protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", persistence: "ifupdown" })).inputs;
    await expectKvmnetError(portForwardProvider.create(props), "Unsupported", /portforward tcp_any_8080: persistence "ifupdown" needs networking\.service/);
    expect(await snapshotHost(h)).toEqual(baseline);
  });

  it("rejects hostile input at check naming the field, and nothing reaches the host", async () => {
    const fields: [string, (v: string) => Record<string, unknown>][] = [
      ["destination", (v) => ({ destination: v })],
      ["hostAddress", (v) => ({ hostAddress: v })],
      ["hostPort", (v) => ({ hostPort: v })],
      ["sourceCidrs", (v) => ({ sourceCidrs: [v] })],
      ["description", (v) => ({ description: v })],
    ];
    const okDescription = (v: string) => /^[\x20-\x7e]{1,128}$/.test(v) && !/["'\\`]/.test(v);
    for (const [field, make] of fields) {
      for (const v of HOSTILE_STRINGS) {
        if (field === "description" && okDescription(v)) continue;
        const props = { connection: conn(), protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", ...make(v) };
        const { failures } = await portForwardProvider.check({}, props);
        expect({ field, v, property: failures?.[0]?.property }).toEqual({ field, v, property: field });
        // Even skipping check, create refuses before touching the host.
        await expectKvmnetError(portForwardProvider.create(props), "InvalidArgument", new RegExp(field));
      }
    }
    // A hostile-looking but valid description is written as an nft comment and read back verbatim.
    const r = await create({ protocol: "tcp", hostPort: 8080, destination: "10.77.0.10", description: "$(id) `x` ; drop table -- {br0} #".replace(/`/g, "") });
    expect(r.outs.description).toBe("$(id) x ; drop table -- {br0} #");
    await portForwardProvider.delete(r.id, r.outs);
    expect(await snapshotHost(h)).toEqual(baseline);
  });
});

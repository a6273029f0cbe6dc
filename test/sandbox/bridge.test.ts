/**
 * Bridge against real sandbox hosts (netns + sshd): CRUD, updates of every
 * field, adoption, drift, destroy-leaves-no-trace, hostile input, host keys,
 * jump hosts and 40 concurrent creates over one SSH connection.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { closeAllConnections, poolStats } from "../../provider/host";
import { bridgeProvider } from "../../provider/resources/bridge";
import { HOSTILE_STRINGS } from "../../testbed/hostile";
import { assertSandboxSupported, Fleet, SandboxHost, snapshotHost, startFleet } from "../../testbed/fleet";
import { expectKvmnetError } from "../support/expectError";
import { createAndKillMidApply } from "./interrupt";

let fleet: Fleet;
let h1: SandboxHost;
let h2: SandboxHost;

beforeAll(async () => {
  await assertSandboxSupported();
  // A second listener on every address lets one host reach the other's sshd
  // over the fleet's uplink LAN (for the jump-host test).
  fleet = await startFleet(2, { sshdExtraConfig: "ListenAddress 0.0.0.0:2222" });
  [h1, h2] = fleet.hosts;
});

afterAll(async () => {
  closeAllConnections();
  await fleet?.stop();
});

function conn(h: SandboxHost, extra: Record<string, unknown> = {}) {
  return { host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint, ...extra };
}

/** Bridge settings without the kernel's running timers. */
function settings(info: Record<string, unknown> | undefined) {
  return Object.fromEntries(Object.entries(info ?? {}).filter(([k]) => !k.endsWith("_timer")));
}

async function linkJson(h: SandboxHost, name: string): Promise<Record<string, any> | undefined> {
  const r = await h.exec(`ip -j -d link show dev ${name}`, { allowFail: true });
  return r.code === 0 ? JSON.parse(r.stdout)[0] : undefined;
}

/** check → create, the way the engine calls them. */
async function create(props: Record<string, unknown>) {
  const checked = await bridgeProvider.check({}, props);
  if (checked.failures?.length) throw new Error(JSON.stringify(checked.failures));
  return bridgeProvider.create(checked.inputs);
}

describe("Bridge CRUD", () => {
  it("replaces an IPv4 address with another in the same subnet (the old primary's removal does not take the new one)", async () => {
    const c = await create({ connection: conn(h1), name: "br-addr", addresses: ["192.0.2.1/24"] });
    const news = (await bridgeProvider.check({}, { connection: conn(h1), name: "br-addr", addresses: ["192.0.2.2/24"] })).inputs;
    const u = await bridgeProvider.update(c.id, c.outs, news);
    expect(u.outs.addresses).toEqual(["192.0.2.2/24"]);
    const j = JSON.parse((await h1.exec("ip -j -4 addr show dev br-addr")).stdout)[0];
    expect(j.addr_info.map((a: { local: string }) => a.local)).toEqual(["192.0.2.2"]);
    await bridgeProvider.delete(c.id, u.outs);
  });

  it("creates, reads, updates every field in place, and deletes without a trace", async () => {
    await h1.exec("ip link add p1 type veth peer name p1x && ip link add p2 type veth peer name p2x");
    const before = await snapshotHost(h1);

    const created = await create({ connection: conn(h1), name: "br-crud", stp: false, mtu: 1400, ports: ["p1"], addresses: ["192.0.2.1/24", "2001:db8::1/64"] });
    expect(created.id).toBe(`${h1.address}/bridge/br-crud`);
    const link = await linkJson(h1, "br-crud");
    expect(link?.linkinfo.info_kind).toBe("bridge");
    expect(link?.mtu).toBe(1400);
    expect(created.outs).toMatchObject({ name: "br-crud", mtu: 1400, ports: ["p1"], attachedInterfaces: ["p1"], ifindex: link?.ifindex, macAddress: link?.address });
    expect((await linkJson(h1, "p1"))?.master).toBe("br-crud");
    const addrs = (await h1.exec("ip -j addr show dev br-crud")).stdout;
    expect(addrs).toContain('"192.0.2.1"');
    expect(addrs).toContain('"2001:db8::1"');

    // P1: reading right after create finds exactly the outputs.
    const read = await bridgeProvider.read(created.id, created.outs);
    expect(read.id).toBe(created.id);
    expect(read.props).toEqual(created.outs);
    // The refreshed inputs are the input fields of the outputs (computed macAddress left out).
    expect(read.inputs).toEqual({
      connection: conn(h1),
      name: "br-crud",
      stp: false,
      mtu: 1400,
      ports: ["p1"],
      addresses: ["192.0.2.1/24", "2001:db8::1/64"],
      adopt: false,
      takeOverUplink: false,
      confirmTimeoutSec: 60,
      persistence: "runtime",
      model: "virtio-net-pci",
    });

    // P6: each field updates in place and the host shows it.
    const updates: [Record<string, unknown>, (l: Record<string, any>) => unknown, unknown][] = [
      [{ stp: true, forwardDelay: 4 }, (l) => [l.linkinfo.info_data.stp_state > 0, l.linkinfo.info_data.forward_delay], [true, 400]],
      [{ helloTime: 3 }, (l) => l.linkinfo.info_data.hello_time, 300],
      [{ maxAge: 12 }, (l) => l.linkinfo.info_data.max_age, 1200],
      [{ priority: 4096 }, (l) => l.linkinfo.info_data.priority, 4096],
      [{ ageingTime: 60 }, (l) => l.linkinfo.info_data.ageing_time, 6000],
      [{ mtu: 1300 }, (l) => l.mtu, 1300],
      [{ macAddress: "52:54:00:aa:bb:cc" }, (l) => l.address, "52:54:00:aa:bb:cc"],
    ];
    let olds = created.outs;
    let inputs = (await bridgeProvider.check({}, { connection: conn(h1), name: "br-crud", stp: false, mtu: 1400, ports: ["p1"], addresses: ["192.0.2.1/24", "2001:db8::1/64"] }))
      .inputs;
    for (const [patch, pick, want] of updates) {
      const news = (await bridgeProvider.check(olds, { ...inputs, ...patch })).inputs;
      const d = await bridgeProvider.diff(created.id, olds, news);
      expect({ patch, d }).toEqual({ patch, d: { changes: true, replaces: [], deleteBeforeReplace: false } });
      const { outs } = await bridgeProvider.update(created.id, olds, news);
      const l = await linkJson(h1, "br-crud");
      expect({ patch, got: pick(l as Record<string, any>) }).toEqual({ patch, got: want });
      expect(await bridgeProvider.diff(created.id, outs, news)).toMatchObject({ changes: false });
      olds = outs;
      inputs = news;
    }

    // vlan_filtering needs CONFIG_BRIDGE_VLAN_FILTERING: on a kernel without it the
    // update must fail as Unsupported and leave the bridge as it was.
    const vf = (await bridgeProvider.check(olds, { ...inputs, vlanFiltering: true })).inputs;
    const kernelHasVf = (await h1.exec("ip link add kvsvf0 type bridge vlan_filtering 1 && ip link del kvsvf0", { allowFail: true })).code === 0;
    if (kernelHasVf) {
      const { outs } = await bridgeProvider.update(created.id, olds, vf);
      expect((await linkJson(h1, "br-crud"))?.linkinfo.info_data.vlan_filtering).toBe(1);
      olds = outs;
      inputs = vf;
    } else {
      const before = await linkJson(h1, "br-crud");
      await expectKvmnetError(bridgeProvider.update(created.id, olds, vf), "Unsupported", /set vlan_filtering on bridge br-crud[\s\S]*Operation not supported[\s\S]*kernel lacks/);
      expect(settings((await linkJson(h1, "br-crud"))?.linkinfo.info_data)).toEqual(settings(before?.linkinfo.info_data));
    }

    // Ports and addresses: swap p1 for p2, drop the IPv6 address.
    const swapped = (await bridgeProvider.check(olds, { ...inputs, ports: ["p2"], addresses: ["192.0.2.1/24"] })).inputs;
    const { outs: afterSwap } = await bridgeProvider.update(created.id, olds, swapped);
    expect((await linkJson(h1, "p1"))?.master).toBeUndefined();
    expect((await linkJson(h1, "p2"))?.master).toBe("br-crud");
    expect((await h1.exec("ip -j addr show dev br-crud")).stdout).not.toContain('"2001:db8::1"');
    expect(afterSwap).toMatchObject({ ports: ["p2"], addresses: ["192.0.2.1/24"], attachedInterfaces: ["p2"] });

    // P4: delete leaves the host as it was (links, addresses, routes, ruleset, sysctls, our files).
    await bridgeProvider.delete(created.id, afterSwap);
    expect(await linkJson(h1, "br-crud")).toBeUndefined();
    expect(await snapshotHost(h1)).toEqual(before);
    // Deleting again is harmless.
    await bridgeProvider.delete(created.id, afterSwap);
    await h1.exec("ip link del p1 && ip link del p2");
  });

  it("replaces on rename (diff) and reports a missing bridge as gone (P5)", async () => {
    const c = await create({ connection: conn(h1), name: "br-ren" });
    expect(await bridgeProvider.diff(c.id, c.outs, { ...c.outs, name: "br-ren2" })).toEqual({ changes: true, replaces: ["name"], deleteBeforeReplace: false });
    await h1.exec("ip link del br-ren");
    expect(await bridgeProvider.read(c.id, c.outs)).toEqual({ id: "", props: {} });
  });

  it("shows drift on read: mtu changed by hand, port released by hand (P2)", async () => {
    await h1.exec("ip link add d1 type veth peer name d1x");
    const c = await create({ connection: conn(h1), name: "br-drift", mtu: 1500, ports: ["d1"] });
    await h1.exec("ip link set dev br-drift mtu 1280 && ip link set dev d1 nomaster");
    const r = await bridgeProvider.read(c.id, c.outs);
    expect(r.props).toMatchObject({ mtu: 1280, ports: [], attachedInterfaces: [] });
    // The next update repairs it.
    const news = (await bridgeProvider.check({}, { connection: conn(h1), name: "br-drift", mtu: 1500, ports: ["d1"] })).inputs;
    expect((await bridgeProvider.diff(c.id, r.props, news)).changes).toBe(true);
    const { outs } = await bridgeProvider.update(c.id, r.props, news);
    expect(outs).toMatchObject({ mtu: 1500, ports: ["d1"] });
    expect((await linkJson(h1, "d1"))?.master).toBe("br-drift");
    await bridgeProvider.delete(c.id, outs);
    await h1.exec("ip link del d1");
  });

  it("refuses an existing bridge without adopt; adopts it into the state create would produce (P3)", async () => {
    await h1.exec("ip link add br-adopt type bridge && ip link set br-adopt address 52:54:00:00:00:42");
    const props = { connection: conn(h1), name: "br-adopt", mtu: 1450, macAddress: "52:54:00:00:00:42" };
    await expectKvmnetError(create(props), "Conflict", /bridge br-adopt already exists[\s\S]*adopt: true/);
    const adopted = await create({ ...props, adopt: true });
    await bridgeProvider.delete(adopted.id, adopted.outs);
    const fresh = await create({ ...props, adopt: true });
    const strip = (o: Record<string, unknown>) => ({ ...o, ifindex: undefined });
    expect(strip(adopted.outs)).toEqual(strip(fresh.outs));
    await bridgeProvider.delete(fresh.id, fresh.outs);
  });

  it("converges when the provider died mid-create and the host finished the apply (P10, #14 item 7)", async () => {
    await h1.exec("ip link add prec type veth peer name precx");
    const before = await snapshotHost(h1);
    const props = { connection: conn(h1), name: "br-rec", mtu: 1400, ports: ["prec"], addresses: ["192.0.2.9/24"] };
    await createAndKillMidApply(h1, "bridge", props);
    expect((await linkJson(h1, "prec"))?.master).toBe("br-rec");
    // The engine never saw that result: the next `up` creates again with the same inputs.
    const c = await create(props);
    expect(c.outs).toMatchObject({ name: "br-rec", mtu: 1400, ports: ["prec"], addresses: ["192.0.2.9/24"] });
    const bridges = JSON.parse((await h1.exec("ip -j link show type bridge")).stdout) as { ifname: string }[];
    expect(bridges.filter((b) => b.ifname === "br-rec")).toHaveLength(1);
    // Other inputs under the same name are not provably that create's: the Conflict names adopt.
    await expectKvmnetError(create({ ...props, mtu: 1500 }), "Conflict", /bridge br-rec already exists on the host[\s\S]*hint: set adopt: true/);
    // Delete gives the port back down, as it was: the record of bringing it up survived the crash.
    await bridgeProvider.delete(c.id, c.outs);
    expect(await snapshotHost(h1)).toEqual(before);

    // A create that returned but whose result the engine dropped converges the same way.
    const lost = await create(props);
    const again = await create(props);
    expect({ ...again.outs, ifindex: 0 }).toEqual({ ...lost.outs, ifindex: 0 });
    expect(again.outs.ifindex).toBe(lost.outs.ifindex);
    await bridgeProvider.delete(again.id, again.outs);
    expect(await snapshotHost(h1)).toEqual(before);
    await h1.exec("ip link del prec");
  });

  it("a failed create leaves nothing behind and says which step failed", async () => {
    // A tun device (no Ethernet header) passes every check but the kernel refuses to enslave it.
    await h1.exec("ip tuntap add dev tun9 mode tun");
    const before = await snapshotHost(h1);
    const err = await expectKvmnetError(create({ connection: conn(h1), name: "br-fail", ports: ["tun9"] }), "Failed", /step failed: attach tun9 to br-fail/);
    expect(err.message).toMatch(/stderr:/);
    expect(err.message).toMatch(/undone/);
    expect(await linkJson(h1, "br-fail")).toBeUndefined();
    expect(await snapshotHost(h1)).toEqual(before);
    await h1.exec("ip link del tun9");
  });
});

describe("round trips", () => {
  it("takes 2 round trips per create, update and delete, and 1 per read", async () => {
    await create({ connection: conn(h2), name: "br-warm" }).then((c) => bridgeProvider.delete(c.id, c.outs));
    const count = async (f: () => Promise<unknown>) => {
      const before = poolStats.commands;
      await f();
      return poolStats.commands - before;
    };
    let c!: Awaited<ReturnType<typeof create>>;
    expect(await count(async () => (c = await create({ connection: conn(h2), name: "br-rt", mtu: 1500 })))).toBe(2);
    expect(await count(() => bridgeProvider.read(c.id, c.outs))).toBe(1);
    const news = (await bridgeProvider.check(c.outs, { connection: conn(h2), name: "br-rt", mtu: 1400 })).inputs;
    let outs!: Record<string, unknown>;
    expect(await count(async () => ({ outs } = await bridgeProvider.update(c.id, c.outs, news)))).toBe(2);
    expect(await count(() => bridgeProvider.delete(c.id, outs))).toBe(2);
  });
});

describe("bad input never reaches the host (P9)", () => {
  it("rejects hostile names at check and at create, with no SSH connection made", async () => {
    closeAllConnections();
    const accepted = h2.acceptedConnections();
    for (const v of HOSTILE_STRINGS) {
      const r = await bridgeProvider.check({}, { connection: conn(h2), name: v });
      expect(r.failures?.[0]?.property).toBe("name");
      await expectKvmnetError(bridgeProvider.create({ connection: conn(h2), name: v }), "InvalidArgument", /name/);
    }
    expect(h2.acceptedConnections()).toBe(accepted);
    expect((await h2.exec("ip -j link show")).stdout).not.toMatch(/br0;|\$\(id\)/);
  });
});

describe("host keys and jump hosts", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-kh-"));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("refuses an unknown key before auth, printing the offered fingerprint and how to pin it", async () => {
    closeAllConnections();
    const empty = path.join(tmp, "empty_known_hosts");
    fs.writeFileSync(empty, "");
    const accepted = h2.acceptedConnections();
    const err = await expectKvmnetError(
      create({ connection: { host: h2.address, privateKey: h2.privateKey, knownHostsFile: empty }, name: "br-k1" }),
      "Unreachable",
      /is not known/,
    );
    expect(err.message).toContain(h2.hostKeyFingerprint);
    expect(err.message).toContain(`hostKey = "${h2.hostKeyFingerprint}"`);
    expect(err.message).toContain("ssh-keyscan");
    expect(err.message).not.toContain(h2.privateKey.split("\n")[1]);
    expect(h2.acceptedConnections()).toBe(accepted);
  });

  it("refuses a wrong pinned key", async () => {
    closeAllConnections();
    await expectKvmnetError(
      // (A fleet's hosts share one host key, so the wrong pin is made up.)
      create({ connection: { host: h2.address, privateKey: h2.privateKey, hostKey: "SHA256:" + "A".repeat(43) }, name: "br-k2" }),
      "Unreachable",
      /host key mismatch/,
    );
  });

  it("accepts a pinned key line and a known_hosts entry", async () => {
    closeAllConnections();
    const a = await create({ connection: { host: h2.address, privateKey: h2.privateKey, hostKey: h2.hostKeyLine }, name: "br-k3" });
    await bridgeProvider.delete(a.id, a.outs);
    closeAllConnections();
    const b = await create({ connection: { host: h2.address, privateKey: h2.privateKey, knownHostsFile: h2.knownHostsPath }, name: "br-k4" });
    await bridgeProvider.delete(b.id, b.outs);
  });

  it("reaches a host through a jump host", async () => {
    closeAllConnections();
    // h1 is the bastion; h2 is addressed by its uplink address, reachable only from inside the fleet.
    const target = { host: h2.uplinkAddress, port: 2222, privateKey: h2.privateKey, hostKey: h2.hostKeyFingerprint, jumpHost: conn(h1) };
    const c = await create({ connection: target, name: "br-jump" });
    expect(await linkJson(h2, "br-jump")).toBeDefined();
    await bridgeProvider.delete(c.id, c.outs);
    expect(await linkJson(h2, "br-jump")).toBeUndefined();
  });
});

describe("concurrency", () => {
  it("creates 40 bridges at once on one host over one SSH connection, without failures", async () => {
    closeAllConnections();
    const accepted = h1.acceptedConnections();
    const handshakes = poolStats.handshakes;
    const names = Array.from({ length: 40 }, (_, i) => `brc${i}`);
    const results = await Promise.allSettled(names.map((name) => create({ connection: conn(h1), name, addresses: [`198.51.100.${names.indexOf(name) + 1}/32`] })));
    const failures = results.filter((r) => r.status === "rejected");
    expect(failures).toEqual([]);
    expect(poolStats.handshakes - handshakes).toBe(1);
    expect(h1.acceptedConnections() - accepted).toBe(1);
    const links = JSON.parse((await h1.exec("ip -j link show type bridge")).stdout).map((l: { ifname: string }) => l.ifname);
    for (const n of names) expect(links).toContain(n);
    await Promise.all(results.flatMap((r) => (r.status === "fulfilled" ? [bridgeProvider.delete(r.value.id, r.value.outs)] : [])));
    const left = JSON.parse((await h1.exec("ip -j link show type bridge")).stdout).filter((l: { ifname: string }) => l.ifname.startsWith("brc"));
    expect(left).toEqual([]);
  });
});

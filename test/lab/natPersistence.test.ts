/**
 * NatNetwork and PortForward survive a real reboot of the lab guest (issue 6):
 * both persist through systemd units of our own, whatever network stack the
 * host runs (KVMNET_LAB_STACK: ifupdown (default), networkd or networkmanager;
 * test/lab/stacks.ts switches the guest to it first).
 *
 * One story, in order (the steps share the guest):
 * 1. create a nat network (DHCP with a fixed host, DNS) and a forward to that
 *    host, persistence "auto": read shows no drift, the files and units are
 *    the ones expected, and nothing else of ours appeared;
 * 2. `systemctl restart nftables` and `reload` flush the ruleset (a marker
 *    table proves it) and our tables are back;
 * 3. reboot: units ran in order, bridge (same MAC), address, tables, dnsmasq,
 *    ip_forward are back; read shows no drift; an update changes nothing live
 *    (same dnsmasq pid); a guest on the bridge gets its DHCP lease and a DNS
 *    answer, and the forward carries a connection to it;
 * 4. hand edits of persisted files are drift; the next update repairs them;
 * 5. delete both: /etc/systemd/system, /etc/sysctl.d, /etc/kvmnet are as before,
 *    no unit of ours is loaded; reboot again: nothing of ours comes back.
 *
 * The guest's LAN NIC is enslaved to the network's bridge by hand, as a VM's
 * tap would be (and again after the reboot, as a restarted VM's would); its
 * far end is a tap in a namespace this test owns, where busybox udhcpc, dig
 * and socat play the VM.
 */
import { ChildProcess, execFileSync, spawn } from "child_process";
import { closeAllConnections } from "../../provider/host";
import { natNetworkProvider } from "../../provider/resources/natNetwork";
import { portForwardProvider } from "../../provider/resources/portForward";
import { udhcpcScript } from "../../testbed/guests";
import { bootLabHost, LabHost } from "../../testbed/labHost";
import { labStacks, NETWORK_STACKS, NetworkStack, useNetworkStack } from "./stacks";

jest.setTimeout(60 * 60_000);

// One stack per run (the steps share one guest): KVMNET_LAB_STACK names it.
const STACKS = labStacks(["ifupdown"]);
if (STACKS.length !== 1) throw new Error(`natPersistence.test.ts runs on one stack per run; KVMNET_LAB_STACK names ${STACKS.length} (${STACKS.join(", ")})`);
const STACK: NetworkStack = STACKS[0];
const ns = `kvnp${process.pid}`;
const sh = (c: string) => execFileSync("sh", ["-c", c], { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
let lab: LabHost;
let lanIf = "";
let listener: ChildProcess | undefined;
const t0 = Date.now();
const figures: string[] = [];
const note = (s: string) => figures.push(`${((Date.now() - t0) / 1000).toFixed(0)}s ${s}`);

const NAT_UNIT = "kvmnet-nat-lab.service";
const DNSMASQ_UNIT = "kvmnet-dnsmasq-lab.service";
const PF_UNIT = "kvmnet-pf-tcp_any_8080.service";
const GUEST_MAC = "52:54:00:66:00:10";
/** Everything of ours a boot could read, and the places units and sysctls live. */
const LISTING =
  "find /etc/systemd/system /etc/sysctl.d /etc/kvmnet -printf '%y %p %l\\n' 2>/dev/null | sort; " +
  "ls -1 /run/systemd/system 2>/dev/null | grep kvmnet; ls -A /run/kvmnet 2>/dev/null; true";
const OUR_UNITS = "systemctl list-units --all --plain --no-legend 'kvmnet-nat-*' 'kvmnet-dnsmasq-*' 'kvmnet-pf-*'";

const conn = () => ({ host: "127.0.0.1", port: lab.port, user: "root", privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint });
const natArgs = () => ({
  connection: conn(),
  name: "lab",
  mode: "nat",
  subnet: "10.66.0.0/24",
  dhcp: { start: "10.66.0.100", end: "10.66.0.150", hosts: [{ mac: GUEST_MAC, ip: "10.66.0.10", hostname: "web" }] },
  dns: { domain: "lab.test", hosts: [{ ip: "10.66.0.5", hostnames: ["db"] }] },
  persistence: "auto",
});
const pfArgs = () => ({ connection: conn(), protocol: "tcp", hostPort: 8080, destination: "10.66.0.10", destinationPort: 80, description: "web on lab", persistence: "auto" });

async function guest(cmd: string): Promise<string> {
  return (await lab.exec(cmd)).stdout.trim();
}

async function unitProp(unit: string, prop: string): Promise<string> {
  return (await lab.exec(`systemctl show -p ${prop} --value ${unit}`, { allowFail: true })).stdout.trim();
}

/** Reboot through the harness (a new boot_id proves it), then drop the provider's old SSH connections. */
async function reboot(): Promise<number> {
  let ms: number;
  if (typeof (lab as Partial<LabHost>).reboot === "function") {
    const r = await lab.reboot();
    expect(r.bootIdAfter).not.toBe(r.bootIdBefore);
    // Where the reboot's time went (host clock; a measurement, not an assertion).

    console.log(`reboot phases: ${JSON.stringify(r.phases)}`);
    ms = r.ms;
  } else {
    const before = await guest("cat /proc/sys/kernel/random/boot_id");
    const r0 = Date.now();
    await lab.exec("systemd-run --on-active=1 systemctl reboot", { allowFail: true });
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await new Promise((res) => setTimeout(res, 3000));
      await lab.waitForSsh().catch(() => undefined);
      after = await guest("cat /proc/sys/kernel/random/boot_id").catch(() => before);
    }
    expect(after).not.toBe(before);
    ms = Date.now() - r0;
  }
  closeAllConnections();
  // Judge the boot once its jobs are done.
  await lab.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 180_000 });
  // Where a boot's time went, and what our units cost of it.
  const time = (await lab.exec("systemd-analyze time 2>&1 | head -1", { allowFail: true })).stdout.trim();
  const ours = (await lab.exec("systemd-analyze blame 2>/dev/null | grep -E 'kvmnet-(nat|dnsmasq|pf)-' | tr -s ' ' | paste -sd ';'", { allowFail: true })).stdout.trim();
  note(`  boot: ${time}${ours ? `; our units: ${ours}` : ""}`);
  return ms;
}

/** The "VM" on the bridge: the guest's LAN NIC in kvn-lab; returns the namespace's DHCP lease. */
async function plugGuestAndLease(): Promise<string> {
  await lab.exec(`ip link set ${lanIf} master kvn-lab && ip link set ${lanIf} up`);
  sh(`ip -n ${ns} addr flush dev ${lab.lan!.tap}`);
  sh(`ip netns exec ${ns} busybox udhcpc -i ${lab.lan!.tap} -n -q -f -t 8 -T 1 -s ${udhcpcScript()}`);
  const a = JSON.parse(sh(`ip -n ${ns} -j -4 addr show dev ${lab.lan!.tap}`))[0]?.addr_info ?? [];
  return a[0]?.local ?? "";
}

function resolve(name: string): string {
  try {
    return sh(`ip netns exec ${ns} dig +short +time=2 +tries=2 @10.66.0.1 ${name}`).trim();
  } catch {
    return "";
  }
}

/** Open the forward from the guest itself (hairpin): 10.0.2.15:8080 → the namespace's 10.66.0.10:80. */
async function throughForward(): Promise<string> {
  const r = await lab.exec("timeout 10 bash -c 'exec 3<>/dev/tcp/10.0.2.15/8080 && cat <&3'", { allowFail: true });
  return r.stdout.trim();
}

async function nftTables(): Promise<string[]> {
  return (await guest("nft list tables")).split("\n").filter(Boolean).sort();
}

beforeAll(async () => {
  expect(NETWORK_STACKS).toContain(STACK);
  sh(`ip netns add ${ns}`);
  lab = await bootLabHost({ lan: { netns: ns }, extraNics: false });
  note(`booted in ${lab.bootMs} ms`);
  lanIf = await guest(`ip -br link | awk '$3 == "${lab.macs.lan}" {print $1}'`);
  expect(lanIf).toMatch(/^eth[1-9]$/);
  // The namespace's NIC is the guest with the fixed DHCP address.
  sh(`ip -n ${ns} link set dev ${lab.lan!.tap} down && ip -n ${ns} link set dev ${lab.lan!.tap} address ${GUEST_MAC} && ip -n ${ns} link set dev ${lab.lan!.tap} up`);
  const sw = await useNetworkStack(lab, STACK);
  closeAllConnections();
  note(`switched to ${STACK}: reboot ${sw.reboot.ms} ms, settled ${sw.settleMs} ms`);
});

afterAll(async () => {
  if (listener?.pid) {
    try {
      process.kill(listener.pid, "SIGTERM");
    } catch {
      /* gone */
    }
  }
  closeAllConnections();
  await lab?.shutdown();
  try {
    sh(`ip netns del ${ns}`);
  } catch {
    /* not created */
  }
  process.stdout.write(`natPersistence (${STACK}) figures:\n  ${figures.join("\n  ")}\n  total ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
});

describe(`NatNetwork and PortForward persisted on a lab guest running ${STACK}`, () => {
  let baseline = "";
  let nat: { id: string; outs: Record<string, unknown>; inputs: Record<string, unknown> };
  let pf: { id: string; outs: Record<string, unknown>; inputs: Record<string, unknown> };
  let bridgeMac = "";

  it("create: persisted through our own units, no drift, exactly the expected files", async () => {
    baseline = await guest(LISTING);
    expect(await guest(OUR_UNITS)).toBe("");
    expect(await guest("cat /proc/sys/net/ipv4/ip_forward")).toBe("0");

    const natIn = (await natNetworkProvider.check({}, natArgs())).inputs;
    const c0 = Date.now();
    const n = await natNetworkProvider.create(natIn);
    note(`NatNetwork create ${Date.now() - c0} ms`);
    nat = { ...n, inputs: natIn };
    expect(n.outs).toMatchObject({ persistedBy: STACK, persistenceDrift: [], dnsmasqUnit: DNSMASQ_UNIT, tablePresent: true, ipForward: true, uplink: "eth0" });
    bridgeMac = n.outs.macAddress as string;
    const pfIn = (await portForwardProvider.check({}, pfArgs())).inputs;
    const p0 = Date.now();
    const f = await portForwardProvider.create(pfIn);
    note(`PortForward create ${Date.now() - p0} ms`);
    pf = { ...f, inputs: pfIn };
    expect(f.outs).toMatchObject({ persistedBy: STACK, persistenceDrift: [], drift: [], table: "kvmnet_pf_tcp_any_8080" });

    // P1: reads right after create find exactly the outputs.
    expect(await natNetworkProvider.read(nat.id, nat.outs)).toEqual({ id: nat.id, props: nat.outs, inputs: expect.objectContaining({ persistence: "auto" }) });
    expect(await portForwardProvider.read(pf.id, pf.outs)).toEqual({ id: pf.id, props: pf.outs, inputs: pf.inputs });

    // What appeared in /etc: our files and links, the manifests, nothing else.
    const added = (await guest(LISTING)).split("\n").filter((l) => !baseline.split("\n").includes(l));
    const etc = added.filter((l) => / \/etc\//.test(l));
    expect(etc.sort()).toEqual(
      [
        "d /etc/kvmnet ",
        "f /etc/kvmnet/nat-lab.up.sh ",
        "f /etc/kvmnet/nat-lab.table.nft ",
        "f /etc/kvmnet/nat-lab.state.json ",
        "f /etc/kvmnet/nat-lab.dnsmasq.conf ",
        "f /etc/kvmnet/nat-lab.dhcp-hosts ",
        "f /etc/kvmnet/nat-lab.hosts ",
        "f /etc/kvmnet/pf-tcp_any_8080.nft ",
        "d /etc/kvmnet/owned ",
        "d /etc/kvmnet/owned/natNetwork ",
        "f /etc/kvmnet/owned/natNetwork/lab ",
        "d /etc/kvmnet/owned/portforward ",
        "f /etc/kvmnet/owned/portforward/tcp_any_8080 ",
        `f /etc/systemd/system/${NAT_UNIT} `,
        `f /etc/systemd/system/${DNSMASQ_UNIT} `,
        `f /etc/systemd/system/${PF_UNIT} `,
        `l /etc/systemd/system/multi-user.target.wants/${NAT_UNIT} /etc/systemd/system/${NAT_UNIT}`,
        `l /etc/systemd/system/multi-user.target.wants/${DNSMASQ_UNIT} /etc/systemd/system/${DNSMASQ_UNIT}`,
        `l /etc/systemd/system/multi-user.target.wants/${PF_UNIT} /etc/systemd/system/${PF_UNIT}`,
        "d /etc/systemd/system/nftables.service.d ",
        "f /etc/systemd/system/nftables.service.d/kvmnet-nat-lab.conf ",
        "f /etc/systemd/system/nftables.service.d/kvmnet-pf-tcp_any_8080.conf ",
        "f /etc/sysctl.d/90-kvmnet-nat-lab.conf ",
      ].sort(),
    );
    expect((await lab.exec(`systemctl is-enabled ${NAT_UNIT} ${DNSMASQ_UNIT} ${PF_UNIT}`)).stdout.split("\n").filter(Boolean)).toEqual(["enabled", "enabled", "enabled"]);
    // The running dnsmasq is now the persisted unit (the /etc file shadows the runtime one).
    expect(await unitProp(DNSMASQ_UNIT, "FragmentPath")).toBe(`/etc/systemd/system/${DNSMASQ_UNIT}`);
    expect(await unitProp(DNSMASQ_UNIT, "ActiveState")).toBe("active");
    expect(Number(await unitProp(DNSMASQ_UNIT, "MainPID"))).toBe(n.outs.dnsmasqPid);
    expect(await unitProp("nftables.service", "DropInPaths")).toMatch(/kvmnet-nat-lab\.conf.*kvmnet-pf-tcp_any_8080\.conf/);
    // systemd itself finds nothing wrong with our units (the lab image has no man pages
    // for Documentation=man:dnsmasq(8) to point at: that complaint is not about the unit).
    const verify = await lab.exec(`systemd-analyze verify ${NAT_UNIT} ${DNSMASQ_UNIT} ${PF_UNIT} 2>&1`, { allowFail: true });
    expect(verify.stdout.split("\n").filter((l) => /kvmnet/.test(l) && !/Command 'man /.test(l))).toEqual([]);
  });

  it("a restart or reload of nftables.service flushes the ruleset, and our tables come back", async () => {
    expect(await unitProp("nftables.service", "LoadState")).toBe("loaded");
    const ours = ["table inet kvmnet_nat_lab", "table ip kvmnet_pf_tcp_any_8080"];
    for (const how of ["restart", "reload"]) {
      // A table nobody re-adds: gone afterwards proves the flush happened.
      await lab.exec("nft add table inet labmarker");
      expect(await nftTables()).toEqual(expect.arrayContaining([...ours, "table inet labmarker"]));
      await lab.exec(`systemctl ${how} nftables.service`);
      const after = await nftTables();
      expect(after).not.toContain("table inet labmarker");
      expect(after).toEqual(expect.arrayContaining(ours));
    }
    const read = await natNetworkProvider.read(nat.id, nat.outs);
    expect(read.props).toMatchObject({ mode: "nat", persistenceDrift: [], tablePresent: true });
    expect((await portForwardProvider.read(pf.id, pf.outs)).props).toMatchObject({ drift: [], persistenceDrift: [] });
  });

  it("after a reboot everything is back, in order, without drift, and carries traffic", async () => {
    const ms = await reboot();
    note(`reboot ${ms} ms`);

    // Units ran, in order: network.target, our boot unit, then dnsmasq.
    expect(await unitProp(NAT_UNIT, "ActiveState")).toBe("active");
    expect(await unitProp(PF_UNIT, "ActiveState")).toBe("active");
    expect(await unitProp(DNSMASQ_UNIT, "ActiveState")).toBe("active");
    const mono = async (unit: string, prop: string) => Number(await unitProp(unit, prop));
    expect(await mono(NAT_UNIT, "ExecMainStartTimestampMonotonic")).toBeGreaterThanOrEqual(await mono("network.target", "ActiveEnterTimestampMonotonic"));
    expect(await mono(DNSMASQ_UNIT, "ExecMainStartTimestampMonotonic")).toBeGreaterThanOrEqual(await mono(NAT_UNIT, "ActiveEnterTimestampMonotonic"));

    // The live objects.
    const link = JSON.parse(await guest("ip -j -d addr show dev kvn-lab"))[0];
    expect(link.linkinfo.info_kind).toBe("bridge");
    expect(link.address).toBe(bridgeMac);
    expect(link.flags).toContain("UP");
    expect(link.addr_info.filter((a: { family: string }) => a.family === "inet").map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)).toEqual([
      "10.66.0.1/24",
    ]);
    expect(await nftTables()).toEqual(expect.arrayContaining(["table inet kvmnet_nat_lab", "table ip kvmnet_pf_tcp_any_8080"]));
    expect(await guest("cat /proc/sys/net/ipv4/ip_forward")).toBe("1");
    // Held as the live apply holds it; what to restore is the host's own configuration (0 here).
    expect(await guest("cat /run/kvmnet/state/ipforward/original; ls /run/kvmnet/state/ipforward")).toBe("0\nnatNetwork.lab\noriginal");

    // read: no drift, live or persisted.
    const read = await natNetworkProvider.read(nat.id, nat.outs);
    expect(read.props).toMatchObject({
      persistedBy: STACK,
      persistenceDrift: [],
      persistence: "auto",
      mode: "nat",
      gateway: "10.66.0.1",
      tablePresent: true,
      ipForward: true,
      dnsmasqUnit: DNSMASQ_UNIT,
      macAddress: bridgeMac,
    });
    expect(read.props.dnsmasqPid).toBe(Number(await unitProp(DNSMASQ_UNIT, "MainPID")));
    expect(read.inputs).toEqual(Object.fromEntries(Object.keys(read.inputs ?? {}).map((k) => [k, nat.outs[k]])));
    const pfRead = await portForwardProvider.read(pf.id, pf.outs);
    expect(pfRead.props).toMatchObject({ persistedBy: STACK, persistenceDrift: [], drift: [] });
    expect(pfRead.inputs).toEqual(pf.inputs);

    // An update with the same inputs changes nothing live: the state record came back too.
    const same = await natNetworkProvider.update(nat.id, read.props, nat.inputs);
    expect(same.outs.dnsmasqPid).toBe(read.props.dnsmasqPid);
    nat.outs = same.outs;

    // Traffic: the fixed DHCP lease (hosts file restored), DNS, and the forward to that guest.
    expect(await plugGuestAndLease()).toBe("10.66.0.10");
    expect(resolve("db.lab.test")).toBe("10.66.0.5");
    expect(resolve("web.lab.test")).toBe("10.66.0.10");
    listener = spawn("ip", ["netns", "exec", ns, "timeout", "600", "socat", "TCP-LISTEN:80,bind=10.66.0.10,reuseaddr,fork", "SYSTEM:echo pf-ok"], { stdio: "ignore" });
    let answer = "";
    for (let i = 0; i < 20 && answer !== "pf-ok"; i++) {
      await new Promise((res) => setTimeout(res, 250));
      answer = await throughForward();
    }
    expect(answer).toBe("pf-ok");
    // The nftables drop-in also works after a reboot.
    await lab.exec("systemctl restart nftables.service");
    expect(await throughForward()).toBe("pf-ok");
  });

  it("hand edits of persisted files are drift; the next update repairs them", async () => {
    const conf = "/etc/kvmnet/nat-lab.dnsmasq.conf";
    const link = `/etc/systemd/system/multi-user.target.wants/${PF_UNIT}`;
    const confBefore = await guest(`sha256sum ${conf}`);
    await lab.exec(`echo log-queries >> ${conf} && rm ${link}`);

    const natDrift = await natNetworkProvider.read(nat.id, nat.outs);
    expect(natDrift.props.persistenceDrift).toEqual([`${conf} differs from what the inputs render`]);
    expect(natDrift.inputs?.persistence).toBe("runtime");
    const pfDrift = await portForwardProvider.read(pf.id, pf.outs);
    expect(pfDrift.props.persistenceDrift).toEqual([`${link} is missing`]);
    expect(await portForwardProvider.diff(pf.id, pfDrift.props, pf.inputs)).toMatchObject({ changes: true, replaces: [] });

    const n = await natNetworkProvider.update(nat.id, natDrift.props, nat.inputs);
    expect(n.outs).toMatchObject({ persistenceDrift: [], persistence: "auto" });
    const f = await portForwardProvider.update(pf.id, pfDrift.props, pf.inputs);
    expect(f.outs).toMatchObject({ persistenceDrift: [] });
    expect(await guest(`sha256sum ${conf}`)).toBe(confBefore);
    expect(await guest(`readlink ${link}`)).toBe(`/etc/systemd/system/${PF_UNIT}`);
    expect(await unitProp(PF_UNIT, "UnitFileState")).toBe("enabled");
    nat.outs = n.outs;
    pf.outs = f.outs;
    expect((await natNetworkProvider.read(nat.id, nat.outs)).props.persistenceDrift).toEqual([]);
  });

  it("persistence switches off and on in place, without touching the live network", async () => {
    const etcOnly = (listing: string) =>
      listing
        .split("\n")
        .filter((l) => / \/etc\//.test(l))
        .join("\n");
    const persisted = etcOnly(await guest(LISTING));
    const pid = nat.outs.dnsmasqPid;
    const set = async (persistence: string) => {
      const n = (await natNetworkProvider.check({}, { ...natArgs(), persistence })).inputs;
      const f = (await portForwardProvider.check({}, { ...pfArgs(), persistence })).inputs;
      nat = { ...nat, inputs: n, outs: (await natNetworkProvider.update(nat.id, nat.outs, n)).outs };
      pf = { ...pf, inputs: f, outs: (await portForwardProvider.update(pf.id, pf.outs, f)).outs };
    };

    await set("runtime");
    expect(nat.outs).toMatchObject({ persistedBy: "runtime", persistenceDrift: [], dnsmasqPid: pid });
    expect(pf.outs).toMatchObject({ persistedBy: "runtime", persistenceDrift: [], drift: [] });
    // Every boot-time file is gone (drop-in directory included); the boot units are no longer loaded.
    expect(etcOnly(await guest(LISTING))).toBe(etcOnly(baseline));
    expect(await guest(`ls /run/systemd/system/${DNSMASQ_UNIT}`)).toBe(`/run/systemd/system/${DNSMASQ_UNIT}`);
    expect((await guest(OUR_UNITS)).split("\n").map((l) => l.split(/\s+/)[0])).toEqual([DNSMASQ_UNIT]);
    // The same dnsmasq runs on, as the runtime unit it was before persisting.
    expect(await unitProp(DNSMASQ_UNIT, "FragmentPath")).toBe(`/run/systemd/system/${DNSMASQ_UNIT}`);
    expect(Number(await unitProp(DNSMASQ_UNIT, "MainPID"))).toBe(pid);
    expect(await throughForward()).toBe("pf-ok");

    await set("auto");
    expect(nat.outs).toMatchObject({ persistedBy: STACK, persistenceDrift: [], dnsmasqPid: pid });
    expect(pf.outs).toMatchObject({ persistedBy: STACK, persistenceDrift: [] });
    expect(etcOnly(await guest(LISTING))).toBe(persisted);
    expect(await unitProp(DNSMASQ_UNIT, "FragmentPath")).toBe(`/etc/systemd/system/${DNSMASQ_UNIT}`);
    expect(await throughForward()).toBe("pf-ok");
  });

  it("delete leaves /etc and systemd as they were, also after another reboot", async () => {
    await portForwardProvider.delete(pf.id, pf.outs);
    await natNetworkProvider.delete(nat.id, nat.outs);
    expect(await guest(LISTING)).toBe(baseline);
    expect(await guest(OUR_UNITS)).toBe("");
    expect(await unitProp("nftables.service", "DropInPaths")).not.toMatch(/kvmnet/);
    expect((await nftTables()).filter((t) => /kvmnet/.test(t))).toEqual([]);
    expect(await guest("cat /proc/sys/net/ipv4/ip_forward")).toBe("0");
    expect((await lab.exec("ip link show kvn-lab", { allowFail: true })).code).not.toBe(0);
    expect(await throughForward()).toBe("");

    const ms = await reboot();
    note(`reboot after delete ${ms} ms`);
    expect(await guest(LISTING)).toBe(baseline);
    expect(await guest(OUR_UNITS)).toBe("");
    expect((await nftTables()).filter((t) => /kvmnet/.test(t))).toEqual([]);
    expect((await lab.exec("ip link show kvn-lab", { allowFail: true })).code).not.toBe(0);
    expect(await guest("cat /proc/sys/net/ipv4/ip_forward")).toBe("0");
    expect((await lab.exec("pgrep -x dnsmasq", { allowFail: true })).stdout.trim()).toBe("");
  });
});

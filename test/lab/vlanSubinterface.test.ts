/**
 * VlanSubinterface against the lab VM (a real Debian kernel with 8021q), driven
 * through the provider the way the engine calls it (check → create/update/read/delete).
 *
 * The guest's LAN NIC is a tap whose host end sits in a network namespace this
 * file creates; this machine's kernel has no 802.1Q, so the tagged peer there is
 * a small raw-socket program (python3, AF_PACKET) that speaks tagged ARP and
 * ICMP, and tcpdump -e shows the tags on the wire. Nothing touches the
 * machine's own interfaces: everything is in the guest or in that namespace.
 *
 * One VM for the whole file (boot ~25 s alone, more when other VMs run); the
 * tests run in order and each leaves the guest as it found it.
 */
import { execFileSync, spawn } from "child_process";
import { closeAllConnections } from "../../provider/host";
import { bridgeProvider } from "../../provider/resources/bridge";
import { vlanSubinterfaceProvider as vlan } from "../../provider/resources/vlanSubinterface";
import { expectKvmnetError } from "../support/expectError";
import { bootLabHost, checkLabSupport, LabHost } from "../../testbed/labHost";
import { labSnapshot } from "./labSnapshot";
import { runTaggedPeer } from "./taggedPeer";
import { labAddrs, labLink } from "./persistSupport";

jest.setTimeout(30 * 60_000);

const ns = `kvl-vl${process.pid}`;
let lab: LabHost;
/** The guest's LAN NIC (its tap's other end is in `ns`) and the tap's name there. */
let lanIf: string;
let tap: string;
/** The guest's backend-less virtio NIC: a parent nothing else uses. */
let spareIf: string;

const root = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: "utf8" });

beforeAll(async () => {
  checkLabSupport();
  root("python3", ["-c", "import socket; socket.AF_PACKET"]); // the tagged peer's interpreter: fail loudly, never skip
  root("ip", ["netns", "add", ns]);
  lab = await bootLabHost({ lan: { netns: ns } });
  console.log(`vlan lab: boot to SSH ${lab.bootMs} ms`);
  tap = lab.lan!.tap;
  const links = JSON.parse((await lab.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
  lanIf = links.find((l) => l.address === lab.macs.lan)!.ifname;
  spareIf = links.find((l) => l.address === lab.macs.virtio)!.ifname;
});

afterAll(async () => {
  closeAllConnections();
  await lab?.shutdown();
  root("ip", ["netns", "del", ns]);
});

const connection = () => ({ host: lab.address, port: lab.port, privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint });
async function checked(props: Record<string, unknown>): Promise<Record<string, unknown>> {
  const c = await vlan.check({}, { connection: connection(), ...props });
  if (c.failures?.length) throw new Error(JSON.stringify(c.failures));
  return c.inputs;
}
async function create(props: Record<string, unknown>) {
  return vlan.create(await checked(props));
}
/** diff (must be in place) → update, as the engine does. */
async function update(id: string, outs: Record<string, unknown>, props: Record<string, unknown>) {
  const news = await checked(props);
  expect(await vlan.diff(id, outs, news)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  return (await vlan.update(id, outs, news)).outs;
}

const link = (name: string) => labLink(lab, name);
const addrs = (name: string) => labAddrs(lab, name);
async function moduleLoaded(): Promise<boolean> {
  return (await lab.exec("lsmod")).stdout.split("\n").some((l) => l.startsWith("8021q "));
}

/** tcpdump -e in the LAN namespace on the tap: `count` frames matching `filter`, while `trigger` runs. */
async function capture(filter: string[], count: number, trigger: () => Promise<unknown>): Promise<string> {
  // `timeout` only bounds a capture whose frames never come; the assertions are on what was seen.
  const dump = spawn("ip", ["netns", "exec", ns, "timeout", "60", "tcpdump", "-c", String(count), "-e", "-n", "-l", "-i", tap, ...filter], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  dump.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  const closed = new Promise<void>((r) => dump.on("close", () => r()));
  try {
    await new Promise<void>((resolve, reject) => {
      let err = "";
      dump.stderr.setEncoding("utf8").on("data", (d: string) => {
        err += d;
        if (/listening on/.test(err)) resolve();
      });
      dump.on("close", () => reject(new Error(`tcpdump ended before it listened: ${err}`)));
    });
    await trigger();
    await closed;
    return out;
  } finally {
    if (dump.exitCode === null && dump.pid) process.kill(dump.pid);
  }
}

function taggedPeer(vid: number, tpid: string, myIp: string, peerIp: string, count: number) {
  return runTaggedPeer(ns, tap, vid, tpid, myIp, peerIp, count);
}

describe("VlanSubinterface on the lab host", () => {
  it("a kernel without 8021q fails as Unsupported before anything changes", async () => {
    // The image does not load 8021q at boot; a test before us may have, with no VLAN left.
    if (await moduleLoaded()) await lab.exec("rmmod 8021q");
    const ko = (await lab.exec("modinfo -n 8021q")).stdout.trim();
    await lab.exec(`mv ${ko} /root/8021q.ko.hidden`);
    try {
      const before = await labSnapshot(lab);
      await expectKvmnetError(
        create({ parent: lanIf, vlanId: 10 }),
        "Unsupported",
        /no 802\.1Q VLAN support: module 8021q is not loaded and `modprobe 8021q` failed[\s\S]*stderr: .*8021q/,
      );
      expect(await labSnapshot(lab)).toEqual(before);
      expect(await moduleLoaded()).toBe(false);
    } finally {
      await lab.exec(`mv /root/8021q.ko.hidden ${ko}`);
    }
  });

  it("loads 8021q on demand; frames leave tagged; the address answers a tagged peer; delete leaves nothing", async () => {
    expect(await moduleLoaded()).toBe(false);
    const before = await labSnapshot(lab);
    const created = await create({ parent: lanIf, vlanId: 10, addresses: ["198.51.100.2/24"] });
    const name = `${lanIf}.10`;
    expect(created.id).toBe(`${lab.address}/vlanSubinterface/${name}`);
    expect(await moduleLoaded()).toBe(true);
    const l = await link(name);
    expect(l).toMatchObject({ link: lanIf, linkinfo: { info_kind: "vlan", info_data: { protocol: "802.1Q", id: 10 } } });
    expect(l?.flags).toContain("UP");
    expect(created.outs).toMatchObject({
      name,
      parent: lanIf,
      vlanId: 10,
      protocol: "802.1Q",
      addresses: ["198.51.100.2/24"],
      ifindex: l?.ifindex,
      macAddress: lab.macs.lan,
      operState: "UP",
    });
    expect(await addrs(name)).toEqual(["198.51.100.2/24"]);

    // What the guest sends on the VLAN leaves its NIC with an 802.1Q tag, id 10.
    const seen = await capture(["vlan", "10", "and", "arp"], 2, () => lab.exec("ping -c 3 -W 1 198.51.100.1", { allowFail: true }));
    expect(seen).toMatch(/ethertype 802\.1Q \(0x8100\), length \d+: vlan 10, p 0, ethertype ARP.*who-has 198\.51\.100\.1 tell 198\.51\.100\.2/);

    // A tagged peer on the LAN reaches the address: tagged ARP reply, tagged echo replies.
    const peer = await taggedPeer(10, "8100", "198.51.100.1", "198.51.100.2", 3);
    expect(peer.arpReply).toEqual({ tpid: "0x8100", vlan: 10, mac: lab.macs.lan });
    expect(peer.echoReplies).toEqual([
      { tpid: "0x8100", vlan: 10 },
      { tpid: "0x8100", vlan: 10 },
      { tpid: "0x8100", vlan: 10 },
    ]);
    expect(peer.untagged).toBe(0);

    // P1: read right after create finds exactly the outputs.
    const read = await vlan.read(created.id, created.outs);
    expect(read.props).toEqual(created.outs);

    await vlan.delete(created.id, created.outs);
    expect(await link(name)).toBeUndefined();
    expect(await labSnapshot(lab)).toEqual(before);
    expect((await vlan.read(created.id, created.outs)).id).toBe("");
  });

  it("802.1ad shows as such in ip -d link and on the wire, and carries traffic", async () => {
    const before = await labSnapshot(lab);
    const created = await create({ parent: lanIf, vlanId: 30, name: "qinq30", protocol: "802.1ad", addresses: ["198.18.0.2/24"] });
    expect(await link("qinq30")).toMatchObject({ link: lanIf, linkinfo: { info_kind: "vlan", info_data: { protocol: "802.1ad", id: 30 } } });
    expect((await lab.exec("ip -d link show dev qinq30")).stdout).toMatch(/vlan protocol 802\.1ad id 30/);
    expect(created.outs).toMatchObject({ name: "qinq30", protocol: "802.1ad", vlanId: 30 });
    const seen = await capture(["vlan", "30", "and", "arp"], 2, () => lab.exec("ping -c 3 -W 1 198.18.0.1", { allowFail: true }));
    expect(seen).toMatch(/\(0x88a8\), length \d+: vlan 30, p 0, ethertype ARP/);
    const peer = await taggedPeer(30, "88a8", "198.18.0.1", "198.18.0.2", 2);
    expect(peer.arpReply).toEqual({ tpid: "0x88a8", vlan: 30, mac: lab.macs.lan });
    expect(peer.echoReplies).toEqual([
      { tpid: "0x88a8", vlan: 30 },
      { tpid: "0x88a8", vlan: 30 },
    ]);
    await vlan.delete(created.id, created.outs);
    expect(await labSnapshot(lab)).toEqual(before);
  });

  it("updates mtu, addresses and bridge in place; refuses an mtu over the parent's and a missing bridge before anything changes", async () => {
    const before = await labSnapshot(lab);
    const br = await bridgeProvider.create((await bridgeProvider.check({}, { connection: connection(), name: "brv40" })).inputs);
    const name = `${lanIf}.40`;
    let outs = (await create({ parent: lanIf, vlanId: 40, mtu: 1400, addresses: ["192.0.2.2/24"] })).outs;
    const id = `${lab.address}/vlanSubinterface/${name}`;
    const { ifindex } = outs;
    expect((await link(name))?.mtu).toBe(1400);

    outs = await update(id, outs, { parent: lanIf, vlanId: 40, mtu: 1300, addresses: ["192.0.2.3/24", "2001:db8:40::3/64"] });
    expect((await link(name))?.mtu).toBe(1300);
    expect((await addrs(name)).sort()).toEqual(["192.0.2.3/24", "2001:db8:40::3/64"]);
    expect(outs).toMatchObject({ mtu: 1300, addresses: ["192.0.2.3/24", "2001:db8:40::3/64"], ifindex });

    // Into the bridge: the addresses leave (a port's own addresses stop working), the VLAN is a port.
    outs = await update(id, outs, { parent: lanIf, vlanId: 40, mtu: 1300, bridge: "brv40" });
    expect((await link(name))?.master).toBe("brv40");
    expect((await lab.exec("bridge -j link show")).stdout).toContain(`"ifname":"${name}"`);
    expect(await addrs(name)).toEqual([]);
    expect(outs).toMatchObject({ bridge: "brv40", addresses: [], ifindex });

    // Refused before anything changes: an mtu over the parent's, a bridge that does not exist.
    const mid = await labSnapshot(lab);
    await expectKvmnetError(
      vlan.update(id, outs, await checked({ parent: lanIf, vlanId: 40, mtu: 9000, bridge: "brv40" })),
      "InvalidArgument",
      new RegExp(`mtu 9000 is larger than the mtu of its parent ${lanIf} \\(1500\\)`),
    );
    await expectKvmnetError(
      vlan.update(id, outs, await checked({ parent: lanIf, vlanId: 40, bridge: "nobr" })),
      "NotFound",
      /bridge nobr does not exist on the host[\s\S]*create the Bridge first/,
    );
    expect(await labSnapshot(lab)).toEqual(mid);

    // Drift: detached by hand → read shows it; the next update re-attaches.
    await lab.exec(`ip link set dev ${name} nomaster && ip link set dev ${name} mtu 1280`);
    const drift = await vlan.read(id, outs);
    expect(drift.props.bridge).toBeUndefined();
    expect(drift.inputs).toMatchObject({ mtu: 1280 });
    outs = await update(id, drift.props, { parent: lanIf, vlanId: 40, mtu: 1300, bridge: "brv40" });
    expect(await link(name)).toMatchObject({ master: "brv40", mtu: 1300 });

    // bridge removed from the program: detached (diff says change although the field is unset).
    outs = await update(id, outs, { parent: lanIf, vlanId: 40, mtu: 1300 });
    expect((await link(name))?.master).toBeUndefined();
    expect(outs.bridge).toBeUndefined();
    expect(outs.ifindex).toBe(ifindex);

    await vlan.delete(id, outs);
    await bridgeProvider.delete(br.id, br.outs);
    expect(await labSnapshot(lab)).toEqual(before);
  });

  it("brings a down parent up and the last of our VLANs takes it down again, also when created and deleted at once; a VLAN made by hand keeps it up", async () => {
    await lab.exec(`ip link set dev ${spareIf} down`);
    const before = await labSnapshot(lab);
    const [a, b] = await Promise.all([create({ parent: spareIf, vlanId: 50 }), create({ parent: spareIf, vlanId: 51 })]);
    expect((await link(spareIf))?.flags).toContain("UP");
    expect((await lab.exec("cat /run/kvmnet/state/vlan/*.up")).stdout.trim().split("\n")).toEqual([spareIf, spareIf]);
    await vlan.delete(a.id, a.outs);
    expect((await link(spareIf))?.flags).toContain("UP"); // b still holds it
    await vlan.delete(b.id, b.outs);
    expect((await link(spareIf))?.flags).not.toContain("UP");
    expect(await labSnapshot(lab)).toEqual(before);

    const [c, d] = await Promise.all([create({ parent: spareIf, vlanId: 52 }), create({ parent: spareIf, vlanId: 53 })]);
    await Promise.all([vlan.delete(c.id, c.outs), vlan.delete(d.id, d.outs)]);
    expect(await labSnapshot(lab)).toEqual(before);

    const e = await create({ parent: spareIf, vlanId: 54 });
    await lab.exec(`ip link add link ${spareIf} name byhand99 type vlan id 99`);
    await vlan.delete(e.id, e.outs);
    expect((await link(spareIf))?.flags).toContain("UP");
    await lab.exec(`ip link del dev byhand99 && ip link set dev ${spareIf} down`);
    expect(await labSnapshot(lab)).toEqual(before);
  });

  it("an existing VLAN is a Conflict unless adopted; adopted, it equals what create makes", async () => {
    const made = await create({ parent: lanIf, vlanId: 60, mtu: 1400 });
    await vlan.delete(made.id, made.outs);
    await lab.exec(`ip link add link ${lanIf} name ${lanIf}.60 type vlan id 60`);
    await expectKvmnetError(create({ parent: lanIf, vlanId: 60, mtu: 1400 }), "Conflict", /already exists on the host[\s\S]*hint: set adopt: true/);
    await expectKvmnetError(create({ parent: lanIf, vlanId: 60, name: "other60" }), "Conflict", new RegExp(`already carries VLAN 60 \\(802\\.1Q\\) on ${lanIf} as ${lanIf}\\.60`));
    const adopted = await create({ parent: lanIf, vlanId: 60, mtu: 1400, adopt: true });
    const strip = (o: Record<string, unknown>) => ({ ...o, ifindex: undefined, adopt: undefined });
    expect(strip(adopted.outs)).toEqual(strip(made.outs));
    await vlan.delete(adopted.id, adopted.outs);
    expect(await link(`${lanIf}.60`)).toBeUndefined();
  });
  it("registers in libvirt: macvtap on the VLAN alone, the host-bridge form once it is a bridge port; delete leaves libvirt as it was", async () => {
    const virsh = async (args: string) => (await lab.exec(`virsh -q -c qemu:///system ${args}`, { timeoutMs: 300_000 })).stdout;
    const networksBefore = await virsh("net-list --all --name");
    const before = await labSnapshot(lab);
    const br = await bridgeProvider.create((await bridgeProvider.check({}, { connection: connection(), name: "brv70" })).inputs);
    const name = `${lanIf}.70`;
    const id = `${lab.address}/vlanSubinterface/${name}`;
    let outs = (await create({ parent: lanIf, vlanId: 70, libvirt: { network: "vlan70" } })).outs;
    // libvirt writes the forward element back with the device on it too.
    expect(await virsh("net-dumpxml vlan70")).toMatch(
      new RegExp(`<forward dev='${name.replace(".", "\\.")}' mode='bridge'>\\s*<interface dev='${name.replace(".", "\\.")}'/>\\s*</forward>`),
    );
    expect(await virsh("net-info vlan70")).toMatch(/Active:\s+yes[\s\S]*Autostart:\s+yes/);
    expect(outs).toMatchObject({ libvirt: { network: "vlan70", autostart: true, adopt: false }, qemuNetdevArgs: [] });
    expect(outs.libvirtInterfaceXml).toBe("<interface type='network'>\n  <source network='vlan70'/>\n  <model type='virtio'/>\n</interface>");

    // Into a bridge: guests now join the bridge, so the network is redefined in the host-bridge form.
    outs = await update(id, outs, { parent: lanIf, vlanId: 70, bridge: "brv70", libvirt: { network: "vlan70", autostart: false } });
    const xml = await virsh("net-dumpxml vlan70");
    expect(xml).toContain("<bridge name='brv70'/>");
    expect(xml).not.toContain("<interface dev=");
    expect(await virsh("net-info vlan70")).toMatch(/Active:\s+yes[\s\S]*Autostart:\s+no/);
    expect(outs.qemuNetdevArgs).toEqual(["-netdev", "bridge,id=net-brv70,br=brv70", "-device", "virtio-net-pci,netdev=net-brv70"]);

    // Dropping `libvirt` from the inputs undefines the network; the VLAN stays.
    outs = await update(id, outs, { parent: lanIf, vlanId: 70, bridge: "brv70" });
    expect(await virsh("net-list --all --name")).toBe(networksBefore);
    expect(outs.libvirt).toBeUndefined();
    expect(outs.libvirtInterfaceXml).toBe("<interface type='bridge'>\n  <source bridge='brv70'/>\n  <model type='virtio'/>\n</interface>");
    outs = await update(id, outs, { parent: lanIf, vlanId: 70, bridge: "brv70", libvirt: { network: "vlan70" } });
    await vlan.delete(id, outs);
    await bridgeProvider.delete(br.id, br.outs);
    expect(await virsh("net-list --all --name")).toBe(networksBefore);
    expect(await labSnapshot(lab)).toEqual(before);
  });
});

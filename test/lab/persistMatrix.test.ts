/**
 * Issue 6, the whole matrix: per network stack the lab guest can run
 * (ifupdown, systemd-networkd, NetworkManager; switched by test/lab/stacks.ts,
 * which reboots into it), all six kinds at once with persistence "auto":
 *
 * 1. switch the stack; record everything a boot could read (persistSupport's
 *    BOOT_LISTING) and that nothing of ours runs;
 * 2. create a Bridge (port: the guest's spare virtio NIC, 192.0.2.1/24), a
 *    VlanSubinterface (802.1Q, VID 30, on the LAN NIC, a port of that bridge),
 *    a TapInterface (owner/group nobody/nogroup by id, vnet_hdr, multi_queue,
 *    mtu 1400, a port of that bridge),
 *    a NatNetwork (10.66.0.0/24, DHCP, DNS), a PortForward (tcp 8080 → a host
 *    in it) and a PciPassthrough (the spare e1000): every read shows no drift
 *    and `persistedBy` = the stack (the kinds that persist through systemd
 *    units of our own report the stack "auto" resolved to as well);
 * 3. reboot: every read returns the object, unchanged, without drift; traffic:
 *    a tagged peer in the test's namespace (the LAN tap's far end) reaches the
 *    bridge's address through the VLAN; a "VM" on the NAT bridge (a namespace
 *    in the guest with a veth port, as a VM's tap) gets DNS answers from the
 *    network's dnsmasq and the forward carries a connection to it; the e1000
 *    is on vfio-pci with its /dev/vfio group node; a hand edit of the bridge's
 *    persisted file is drift (`persistenceDrift`, persistence reads "runtime")
 *    and an update repairs it without touching the live bridge;
 * 4. delete all six (reverse order): the listing equals step 1's, nothing of
 *    ours runs; reboot: still equal, no link, unit or nft table of ours back,
 *    the e1000 on e1000 again.
 *
 * One guest boot for all stacks run. `npm test` runs NetworkManager only (each
 * stack takes five to six minutes under TCG, two reboots and a stack switch);
 * KVMNET_LAB_STACK=all (or a comma list) runs those stacks: all three have
 * passed. Step durations are printed, never asserted.
 */
import { execFileSync } from "child_process";
import { isDeepStrictEqual } from "util";
import { closeAllConnections } from "../../provider/host";
import { bridgeProvider } from "../../provider/resources/bridge";
import { natNetworkProvider } from "../../provider/resources/natNetwork";
import { pciPassthroughProvider } from "../../provider/resources/pciPassthrough";
import { unitName as vfioUnit } from "../../provider/resources/pciPassthrough/persist";
import { portForwardProvider } from "../../provider/resources/portForward";
import { tapInterfaceProvider } from "../../provider/resources/tapInterface";
import { vlanSubinterfaceProvider } from "../../provider/resources/vlanSubinterface";
import type { KindProvider } from "../../provider/resources/kind";
import { bootLabHost, checkLabSupport, LabHost } from "../../testbed/labHost";
import { BOOT_LISTING, Created, createThrough, driverOf, listingDiff, namesByMac, releaseLab, stackDiagnostics, waitFor, without } from "./persistSupport";
import { labStacks, NetworkStack, useNetworkStack } from "./stacks";
import { runTaggedPeer, taggedOk, taggedSummary } from "./taggedPeer";

jest.setTimeout(90 * 60_000);

const STACKS = labStacks(["networkmanager"]);

const ns = `kvmx${process.pid}`;
const root = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

const BRIDGE = "brmx";
const BRIDGE_ADDR = "192.0.2.1/24";
const VLAN = "vmx30";
const VID = 30;
/** The tap, a port of the bridge; owned by nobody/nogroup by id (NetworkManager takes ids only). */
const TAP = "tapmx";
/** The tagged peer's own address on VLAN 30 (the LAN tap's far end). */
const PEER_IP = "192.0.2.9";
const NAT = { name: "lab", bridge: "kvn-lab", gateway: "10.66.0.1" } as const;
const NAT_HOST = { ip: "10.66.0.10", mac: "52:54:00:66:00:10" };
/** The "VM" on the NAT bridge: a namespace in the guest, its veth's far end a port of kvn-lab. */
const VM = { netns: "kvmxvm", port: "kvmxh", nic: "kvmxv0" } as const;

/** Read fields that legitimately change when the host reboots. */
const VOLATILE: Record<string, string[]> = {
  bridge: ["ifindex", "operState"],
  vlan: ["ifindex", "operState"],
  // A tap made at boot gets a new random MAC (the kernel's, as `ip tuntap add` gives it).
  tap: ["ifindex", "operState", "macAddress"],
  nat: ["dnsmasqPid", "ifindex"],
  pf: [],
  pci: [],
};

let lab: LabHost;
let lanIf = "";
let spareIf = "";
let e1000Addr = "";
const figures: string[] = [];

async function guest(cmd: string): Promise<string> {
  return (await lab.exec(cmd)).stdout.trim();
}

beforeAll(async () => {
  checkLabSupport();
  root("python3", ["-c", "import socket; socket.AF_PACKET"]); // the tagged peer's interpreter: fail loudly, never skip
  root("ip", ["netns", "add", ns]);
  lab = await bootLabHost({ lan: { netns: ns }, extraNics: true });
  figures.push(`boot ${lab.bootMs} ms`);
  const names = await namesByMac(lab);
  lanIf = names.get(lab.macs.lan!)!;
  spareIf = names.get(lab.macs.virtio!)!;
  const e1000If = names.get(lab.macs.e1000!)!;
  expect([lanIf, spareIf, e1000If]).toEqual([expect.stringMatching(/^eth\d$/), expect.stringMatching(/^eth\d$/), expect.stringMatching(/^eth\d$/)]);
  e1000Addr = await guest(`basename "$(readlink -f /sys/class/net/${e1000If}/device)"`);
  expect(e1000Addr).toMatch(/^0000:00:[0-9a-f]{2}\.0$/);
  // The "VM"'s listener (perl-base is Essential in Debian; IO::Socket::INET is part of it).
  await lab.exec("perl -MIO::Socket::INET -e 1");
});

afterAll(async () => {
  await releaseLab(lab, ns);
  console.log(`persistMatrix figures:\n  ${figures.join("\n  ")}`);
});

/** Reboot (a new boot id, checked by the harness), drop the provider's dead SSH connections, wait for the boot's jobs. */
async function reboot(): Promise<{ ms: number; settleMs: number }> {
  closeAllConnections();
  const r = await lab.reboot();
  expect(r.bootIdAfter).not.toBe(r.bootIdBefore);
  // Where the reboot's time went (host clock; a measurement, not an assertion).

  console.log(`reboot phases: ${JSON.stringify(r.phases)}`);
  const t = Date.now();
  await lab.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 180_000 });
  return { ms: r.ms, settleMs: Date.now() - t };
}

/** What of ours is running on the guest: links, units (loaded or not), nft tables, runtime dirs, ip_forward. */
async function oursRunning() {
  const links = (await guest("ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'"))
    .split("\n")
    .filter((l) => [BRIDGE, VLAN, TAP, NAT.bridge, VM.port].includes(l) || /kvmnet|^kvn-/.test(l));
  // kvmnet-lab-* are the lab image's own units (testbed/labHost.ts), not the provider's.
  const units = (await guest("systemctl list-units --all --plain --no-legend 'kvmnet-*' | awk '{print $1}'")).split("\n").filter((u) => u && !u.startsWith("kvmnet-lab-"));
  const tables = (await guest("nft list tables")).split("\n").filter((t) => /kvmnet/.test(t));
  const run = (await guest("ls -A /run/kvmnet 2>/dev/null; ls /run/systemd/system 2>/dev/null | grep kvmnet; true")).split("\n").filter(Boolean);
  const ipForward = await guest("cat /proc/sys/net/ipv4/ip_forward");
  return { links, units, tables, run, ipForward };
}
const NOTHING_RUNNING = { links: [], units: [], tables: [], run: [], ipForward: "0" };

const plainJson = (v: unknown): unknown => JSON.parse(JSON.stringify(v ?? null));

async function ipv4Of(dev: string): Promise<string[]> {
  const r = JSON.parse((await lab.exec(`ip -j -4 addr show dev ${dev} 2>/dev/null || echo '[]'`)).stdout) as { addr_info?: { local: string; prefixlen: number }[] }[];
  return (r[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`);
}

async function masterOf(dev: string): Promise<string | undefined> {
  const r = JSON.parse((await lab.exec(`ip -j link show dev ${dev} 2>/dev/null || echo '[]'`)).stdout) as { master?: string }[];
  return r[0]?.master;
}

/**
 * The admin's part under networkd: networkd makes a VLAN at boot only from
 * its parent's .network (vlanPersistence.test.ts), so the LAN NIC gets one.
 * Returns the script that removes it again.
 */
async function adminSetup(stack: NetworkStack): Promise<string> {
  if (stack !== "networkd") return "true";
  await lab.exec(
    `printf '[Match]\\nName=${lanIf}\\n\\n[Network]\\nLinkLocalAddressing=no\\n\\n[Link]\\nRequiredForOnline=no\\n' > /etc/systemd/network/10-trunk.network && ` +
      `networkctl reload && for i in $(seq 100); do grep -qs NETWORK_FILE=/etc/systemd/network/10-trunk.network /run/systemd/netif/links/$(cat /sys/class/net/${lanIf}/ifindex) && exit 0; sleep 0.2; done; exit 1`,
  );
  return "rm -rf /etc/systemd/network/10-trunk.network /etc/systemd/network/10-trunk.network.d; networkctl reload";
}

/** Plug the "VM" into the NAT bridge: a namespace in the guest, a veth port of kvn-lab, the DHCP host's MAC and address, DNS from the network. */
async function plugVm(): Promise<void> {
  await lab.exec(
    [
      `ip netns add ${VM.netns}`,
      `ip link add ${VM.port} type veth peer name ${VM.nic} netns ${VM.netns}`,
      `ip link set ${VM.port} master ${NAT.bridge}`,
      `ip link set ${VM.port} up`,
      `ip -n ${VM.netns} link set lo up`,
      `ip -n ${VM.netns} link set ${VM.nic} address ${NAT_HOST.mac}`,
      `ip -n ${VM.netns} link set ${VM.nic} up`,
      `ip -n ${VM.netns} addr add ${NAT_HOST.ip}/24 dev ${VM.nic}`,
      `ip -n ${VM.netns} route add default via ${NAT.gateway}`,
      `mkdir -p /etc/netns/${VM.netns}`,
      `echo 'nameserver ${NAT.gateway}' > /etc/netns/${VM.netns}/resolv.conf`,
    ].join(" && "),
  );
}

/** Start the "VM"'s web server (port 80, answers "pf-ok"); returns its pid. */
async function startVmListener(): Promise<string> {
  const pl = `$s = IO::Socket::INET->new(LocalAddr => "${NAT_HOST.ip}", LocalPort => 80, Listen => 5, ReuseAddr => 1) or die "listen: $!"; while ($c = $s->accept) { print $c "pf-ok\\n"; close $c }`;
  const b64 = Buffer.from(pl).toString("base64");
  await lab.exec(`echo ${b64} | base64 -d > /run/kvmx-listen.pl`);
  // Detached from the SSH channel (every fd redirected), so the exec returns at once; $! is timeout's pid (ip netns exec execs it).
  return guest(`ip netns exec ${VM.netns} timeout 600 perl -MIO::Socket::INET /run/kvmx-listen.pl >/dev/null 2>&1 </dev/null & echo $!`);
}

async function unplugVm(listenerPid: string): Promise<void> {
  if (listenerPid) await lab.exec(`kill ${listenerPid} 2>/dev/null; true`);
  await lab.exec(`ip netns del ${VM.netns} 2>/dev/null; rm -rf /etc/netns/${VM.netns} /run/kvmx-listen.pl; rmdir /etc/netns 2>/dev/null; true`);
}

/** Through the forward from the guest itself (hairpin): 10.0.2.15:8080 → the VM's 10.66.0.10:80. */
async function throughForward(): Promise<string> {
  return (await lab.exec("timeout 10 bash -c 'exec 3<>/dev/tcp/10.0.2.15/8080 && cat <&3'", { allowFail: true })).stdout.trim();
}

const natArgs = {
  name: NAT.name,
  mode: "nat",
  subnet: "10.66.0.0/24",
  dhcp: { start: "10.66.0.100", end: "10.66.0.150", hosts: [{ mac: NAT_HOST.mac, ip: NAT_HOST.ip, hostname: "web" }] },
  dns: { domain: "lab.test", hosts: [{ ip: "10.66.0.5", hostnames: ["db"] }] },
  persistence: "auto",
};

type Kind = "bridge" | "vlan" | "tap" | "nat" | "pf" | "pci";
const PROVIDERS: Record<Kind, KindProvider> = {
  bridge: bridgeProvider,
  vlan: vlanSubinterfaceProvider,
  tap: tapInterfaceProvider,
  nat: natNetworkProvider,
  pf: portForwardProvider,
  pci: pciPassthroughProvider,
};
const ORDER: Kind[] = ["bridge", "vlan", "tap", "nat", "pf", "pci"];

describe.each(STACKS)("all six kinds persisted through %s", (stack) => {
  it("apply, reboot: no drift and traffic; delete, reboot: nothing of ours left", async () => {
    const d: Record<string, number> = {};
    const step = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
      const t = Date.now();
      try {
        return await f();
      } finally {
        d[name] = Date.now() - t;
      }
    };
    const created: Partial<Record<Kind, Created>> = {};
    let undoAdmin = "true";
    let listener = "";
    try {
      // 1. The stack, and what a boot could read before we write anything.
      closeAllConnections();
      const sw = await step("switchStack", () => useNetworkStack(lab, stack));
      closeAllConnections();
      d.switchReboot = sw.reboot.ms;
      const names = await namesByMac(lab);
      expect([names.get(lab.macs.lan!), names.get(lab.macs.virtio!)]).toEqual([lanIf, spareIf]);
      undoAdmin = await adminSetup(stack);
      const baseline = await guest(BOOT_LISTING);
      expect(await oursRunning()).toEqual(NOTHING_RUNNING);
      expect(await driverOf(lab, e1000Addr)).toBe("e1000");

      // 2. Create all six, persistence "auto".
      const args: Record<Kind, Record<string, unknown>> = {
        bridge: { name: BRIDGE, ports: [spareIf], addresses: [BRIDGE_ADDR], persistence: "auto" },
        vlan: { parent: lanIf, vlanId: VID, name: VLAN, bridge: BRIDGE, persistence: "auto" },
        tap: { name: TAP, owner: 65534, group: 65534, vnetHdr: true, multiQueue: true, mtu: 1400, bridge: BRIDGE, persistence: "auto" },
        nat: natArgs,
        pf: { protocol: "tcp", hostPort: 8080, destination: NAT_HOST.ip, destinationPort: 80, description: "web on lab", persistence: "auto" },
        pci: { address: e1000Addr, persistence: "auto" },
      };
      for (const k of ORDER) created[k] = await step(`create.${k}`, () => createThrough(PROVIDERS[k], lab, args[k]));
      const c = created as Record<Kind, Created>;
      for (const k of ORDER)
        expect({ kind: k, persistedBy: c[k].outs.persistedBy, persistenceDrift: c[k].outs.persistenceDrift }).toEqual({ kind: k, persistedBy: stack, persistenceDrift: [] });
      expect(c.bridge.outs).toMatchObject({ ports: [spareIf], addresses: [BRIDGE_ADDR] });
      expect(c.vlan.outs).toMatchObject({ parent: lanIf, vlanId: VID, bridge: BRIDGE });
      expect(c.tap.outs).toMatchObject({ owner: "65534", group: "65534", vnetHdr: true, multiQueue: true, mtu: 1400, bridge: BRIDGE });
      expect(c.pci.outs).toMatchObject({ driver: "vfio-pci", originalDriver: "e1000" });
      // Reads after all six exist find the outputs, except what another kind changed:
      // the bridge's attachedInterfaces (observed) now has the VLAN too. What the
      // engine holds after a refresh is these reads; the reboot is judged against them.
      const state = {} as Record<Kind, Record<string, unknown>>;
      for (const k of ORDER) {
        const read = await PROVIDERS[k].read(c[k].id, c[k].outs);
        expect({ kind: k, id: read.id, persistence: read.inputs?.persistence }).toEqual({ kind: k, id: c[k].id, persistence: "auto" });
        state[k] = read.props;
      }
      expect(((state.bridge.attachedInterfaces as string[]) ?? []).slice().sort()).toEqual([spareIf, VLAN, TAP].sort());
      for (const k of ORDER) {
        const attached = k === "bridge" ? ["attachedInterfaces"] : [];
        expect({ kind: k, props: without(state[k], attached) }).toEqual({ kind: k, props: without(c[k].outs, attached) });
      }
      // Live: the tagged peer reaches the bridge through the VLAN.
      expect(taggedSummary(await step("traffic.vlanLive", () => runTaggedPeer(ns, lab.lan!.tap, VID, "8100", PEER_IP, BRIDGE_ADDR.split("/")[0], 2)))).toEqual(
        taggedOk(VID, "8100"),
      );
      const persisted = listingDiff(baseline, await guest(BOOT_LISTING));
      expect(persisted.removed).toEqual([]);
      console.log(`${stack}: files written by the six kinds:\n  ${persisted.added.filter((l) => !/^[0-9a-f]{64} /.test(l)).join("\n  ")}`);

      // 3. Reboot: every object back, unchanged, no drift; traffic.
      const r1 = await step("reboot1", reboot);
      d.reboot1Ssh = r1.ms;
      d.reboot1Settle = r1.settleMs;
      d.objectsBack = await waitFor("all six back", 90_000, async () => {
        const [br, vl, nat, drv] = [await ipv4Of(BRIDGE), await masterOf(VLAN), await ipv4Of(NAT.bridge), await driverOf(lab, e1000Addr)];
        return (
          br.includes(BRIDGE_ADDR) &&
          vl === BRIDGE &&
          (await masterOf(TAP)) === BRIDGE &&
          (await masterOf(spareIf)) === BRIDGE &&
          nat.includes(`${NAT.gateway}/24`) &&
          drv === "vfio-pci"
        );
      });
      // The stack may still be finishing what it brings up (is-system-running does not wait
      // for NetworkManager's activations): reads are taken again until they are the
      // reboot's (bounded); the assertions below judge the reads taken after that.
      const sameAsBefore = async (k: Kind) => {
        const read = await PROVIDERS[k].read(c[k].id, state[k]);
        return isDeepStrictEqual(plainJson(without(read.props, VOLATILE[k])), plainJson(without(state[k], VOLATILE[k])));
      };
      d.readsSettled = await waitFor("every read back as before", 60_000, async () => {
        for (const k of ORDER) if (!(await sameAsBefore(k))) return false;
        return true;
      }).catch(() => -1);
      const after = await namesByMac(lab);
      expect([after.get(lab.macs.lan!), after.get(lab.macs.virtio!)]).toEqual([lanIf, spareIf]);
      for (const k of ORDER) {
        const read = await step(`read.${k}`, () => PROVIDERS[k].read(c[k].id, state[k]));
        expect({ kind: k, id: read.id, props: without(read.props, VOLATILE[k]), persistence: read.inputs?.persistence }).toEqual({
          kind: k,
          id: c[k].id,
          props: without(state[k], VOLATILE[k]),
          persistence: "auto",
        });
        state[k] = read.props;
      }
      expect(await masterOf(spareIf)).toBe(BRIDGE);
      expect(JSON.parse(await guest(`ip -j -d link show dev ${VLAN}`))[0]).toMatchObject({
        link: lanIf,
        master: BRIDGE,
        linkinfo: { info_kind: "vlan", info_data: { protocol: "802.1Q", id: VID } },
      });
      // The tap as it was made: flags, owner and group (ids), mtu, in the bridge.
      expect(JSON.parse(await guest(`ip -j -d link show dev ${TAP}`))[0]).toMatchObject({
        master: BRIDGE,
        mtu: 1400,
        linkinfo: { info_kind: "tun", info_data: { type: "tap", pi: false, vnet_hdr: true, multi_queue: true, user: "nobody", group: "nogroup" } },
      });
      // VLAN + bridge: tagged 802.1Q frames on the LAN reach the bridge's address.
      expect(taggedSummary(await step("traffic.vlan", () => runTaggedPeer(ns, lab.lan!.tap, VID, "8100", PEER_IP, BRIDGE_ADDR.split("/")[0], 2)))).toEqual(taggedOk(VID, "8100"));
      // NAT + forward: a VM on the network's bridge reaches its gateway, resolves from its dnsmasq, and the forward reaches it.
      await step("traffic.nat", async () => {
        await plugVm();
        await lab.exec(`ip netns exec ${VM.netns} ping -c 2 -W 2 ${NAT.gateway}`);
        expect((await guest(`ip netns exec ${VM.netns} getent ahostsv4 db.lab.test || true`)).split(/\s+/)[0]).toBe("10.66.0.5");
        listener = await startVmListener();
        expect(listener).toMatch(/^\d+$/);
        let answer = "";
        for (let i = 0; i < 40 && answer !== "pf-ok"; i++) {
          await new Promise((res) => setTimeout(res, 250));
          answer = await throughForward();
        }
        expect(answer).toBe("pf-ok");
      });
      // PCI: on vfio-pci, the group's node exists, the boot unit ran.
      const group = await guest(`basename "$(readlink /sys/bus/pci/devices/${e1000Addr}/iommu_group)"`);
      expect(group).toMatch(/^\d+$/);
      expect(await guest(`ls -l /dev/vfio/${group} | cut -c1`)).toBe("c");
      // systemctl show prints properties in its own order.
      const unit = Object.fromEntries((await guest(`systemctl show -p ActiveState -p Result ${vfioUnit(e1000Addr)}`)).split("\n").map((l) => l.split("=", 2)));
      expect(unit).toEqual({ ActiveState: "active", Result: "success" });

      // A hand edit of a persisted file is drift; the next update puts it back (the Bridge's
      // file for this stack; the other kinds' drift is proven in their *Persistence files).
      await step("bridgeFileDrift", async () => {
        const files = (await guest(`cat /etc/kvmnet/owned/bridge/${BRIDGE}`)).split("\n").filter(Boolean);
        expect(files.length).toBeGreaterThan(0);
        await lab.exec(`echo '# edited by hand' >> ${files[0]}`);
        const drifted = await bridgeProvider.read(c.bridge.id, state.bridge);
        expect(drifted.props.persistenceDrift).toEqual([`${files[0]} differs from what the inputs render`]);
        expect(drifted.inputs?.persistence).toBe("runtime");
        expect(await bridgeProvider.diff(c.bridge.id, drifted.props, c.bridge.inputs)).toMatchObject({ changes: true, replaces: [] });
        const repaired = await bridgeProvider.update(c.bridge.id, drifted.props, c.bridge.inputs);
        expect(repaired.outs).toMatchObject({ persistedBy: stack, persistenceDrift: [], ports: [spareIf], addresses: [BRIDGE_ADDR], macAddress: state.bridge.macAddress });
        expect(await guest(`grep -c 'edited by hand' ${files[0]} || true`)).toBe("0");
        // Repaired in /etc only: the live bridge kept its address and ports.
        expect([await ipv4Of(BRIDGE), await masterOf(spareIf), await masterOf(VLAN)]).toEqual([[BRIDGE_ADDR], BRIDGE, BRIDGE]);
        state.bridge = repaired.outs;
      });

      // 4. Delete all six, reverse order: /etc as before, nothing of ours runs; the same after another reboot.
      await unplugVm(listener);
      listener = "";
      for (const k of [...ORDER].reverse()) {
        await step(`delete.${k}`, () => PROVIDERS[k].delete(c[k].id, state[k]));
        delete created[k];
      }
      const afterDelete = { files: listingDiff(baseline, await guest(BOOT_LISTING)), running: await oursRunning(), e1000: await driverOf(lab, e1000Addr) };
      const r2 = await step("reboot2", reboot);
      d.reboot2Ssh = r2.ms;
      // The e1000 driver binds the NIC again at boot; give udev its time (bounded).
      await waitFor("e1000 bound", 30_000, async () => (await driverOf(lab, e1000Addr)) !== "").catch(() => 0);
      const afterReboot = {
        files: listingDiff(baseline, await guest(BOOT_LISTING)),
        running: await oursRunning(),
        e1000: await driverOf(lab, e1000Addr),
        override: await guest(`cat /sys/bus/pci/devices/${e1000Addr}/driver_override`),
        vfioUnits: await guest(`systemctl list-units --all --no-legend 'kvmnet-vfio-*' | wc -l`),
      };
      const clean = { files: { added: [], removed: [] }, running: NOTHING_RUNNING, e1000: "e1000" };
      expect({ afterDelete, afterReboot }).toEqual({ afterDelete: clean, afterReboot: { ...clean, override: "(null)", vfioUnits: "0" } });
    } catch (e) {
      // What the stacks and our units say, with the failure (the guest is gone afterwards).
      (e as Error).message += `\n--- ${stack}: the guest's stacks when it failed ---\n${await stackDiagnostics(lab, ["kvmnet-*"]).catch((x: Error) => x.message)}`;
      throw e;
    } finally {
      console.log(`${stack}: step durations (ms): ${JSON.stringify(d)}`);
      figures.push(`${stack}: ${JSON.stringify(d)}`);
      // A failed run leaves nothing for the next stack.
      await unplugVm(listener).catch(() => undefined);
      for (const k of [...ORDER].reverse()) {
        const o = created[k];
        if (o) await PROVIDERS[k].delete(o.id, o.outs).catch((e: Error) => console.log(`cleanup: delete ${k}: ${e.message}`));
      }
      await lab.exec(undoAdmin, { allowFail: true });
    }
  });
});

import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { manifestPath, persistDrift, persistSteps } from "../../../../provider/persist";
import { ifupdownReads } from "../../../../provider/persist/ifupdown";
import { networkdParentFile } from "../../../../provider/persist/networkd";
import { profileUuid } from "../../../../provider/persist/networkManager";
import { stackFacts as vlanPersistFacts } from "../../../../provider/persist/stackFacts";
import { persistVlan, renderIfupdown, renderNetworkd, renderNetworkManager } from "../../../../provider/resources/vlanSubinterface/persist";
import { VlanSubinterfaceInputs, vlanSubinterfaceInputsSchema } from "../../../../provider/resources/vlanSubinterface/schema";
import { expectKvmnetThrow } from "../../../support/expectError";

// The lab fixture (eth1 ifindex 3, br10, eth1.10, eth1.20) plus a vlanPersist section.
const fixture = fs.readFileSync(path.join(__dirname, "../../../fixtures/observe/vlan-eth1-v10-v20.txt"), "utf8");
const withFacts = (lines: string[]): HostSnapshot => parseSnapshot(`${fixture}\n@@kvmnet-begin vlanPersist\n${lines.join("\n")}\n@@kvmnet-end vlanPersist 0\n`, "fixture");
const inputs = (over: Record<string, unknown> = {}): VlanSubinterfaceInputs =>
  vlanSubinterfaceInputsSchema.parse({ connection: { host: "h" }, parent: "eth1", vlanId: 30, persistence: "auto", ...over });

const HEADER = (name: string) => `# Written by pulumi-kvmnet for vlanSubinterface ${name}. Local edits are reported as drift and overwritten.`;

describe("vlanPersistFacts", () => {
  it("reads networkd's applied files by interface, netdevs, ifupdown sources and stanzas, NetworkManager devices and profiles", () => {
    const f = vlanPersistFacts(
      withFacts([
        "netfile 3 /etc/systemd/network/10-trunk.network",
        "netfile 99 /etc/systemd/network/gone.network",
        "netdev bridge br10 /etc/systemd/network/05-kvmnet-bridge-br10.netdev",
        "netdev - - /usr/lib/systemd/network/empty.netdev",
        "ournetwork /etc/systemd/network/05-kvmnet-bridge-br10.network",
        "ifsource source /etc/network/interfaces.d/*",
        "ifauto lo",
        "ifauto eth0",
        "nmversion 1.42.4",
        "nmdev eth0 unmanaged",
        "nmdev eth1 connected (externally)",
        "nmprofile bridge br10 saved /etc/NetworkManager/system-connections/my bridge.nmconnection",
        "nmprofile ethernet - saved /etc/NetworkManager/system-connections/x.nmconnection",
        "nmprofile bridge brx generated /run/NetworkManager/system-connections/brx.nmconnection",
      ]),
    );
    expect(f.networkFiles).toEqual(new Map([["eth1", "/etc/systemd/network/10-trunk.network"]]));
    expect(f.netdevs).toEqual([
      { kind: "bridge", name: "br10", path: "/etc/systemd/network/05-kvmnet-bridge-br10.netdev" },
      { kind: "-", name: "-", path: "/usr/lib/systemd/network/empty.netdev" },
    ]);
    expect(f.ourNetworkFiles).toEqual(["/etc/systemd/network/05-kvmnet-bridge-br10.network"]);
    expect(f.ifupdownSources).toEqual(["source /etc/network/interfaces.d/*"]);
    expect(f.ifupdownAuto).toEqual(["lo", "eth0"]);
    expect(f.nmVersion).toBe("1.42.4");
    expect(f.nmDevices).toEqual(
      new Map([
        ["eth0", "unmanaged"],
        ["eth1", "connected (externally)"],
      ]),
    );
    expect(f.nmProfiles).toEqual([
      { type: "bridge", interfaceName: "br10", path: "/etc/NetworkManager/system-connections/my bridge.nmconnection" },
      { type: "ethernet", interfaceName: undefined, path: "/etc/NetworkManager/system-connections/x.nmconnection" },
    ]);
  });
});

describe("systemd-networkd", () => {
  it("a netdev, a network, and a drop-in that adds VLAN= to the file managing the parent", () => {
    const files = renderNetworkd(inputs({ mtu: 1400, addresses: ["192.0.2.2/24", "2001:db8::2/64"] }), "/usr/lib/systemd/network/80-trunk.network");
    expect(files).toEqual([
      {
        path: "/etc/systemd/network/05-kvmnet-vlan-eth1.30.netdev",
        content: `${HEADER("eth1.30")}\n[NetDev]\nName=eth1.30\nKind=vlan\nMTUBytes=1400\n\n[VLAN]\nId=30\n`,
      },
      {
        path: "/etc/systemd/network/05-kvmnet-vlan-eth1.30.network",
        content: `${HEADER("eth1.30")}\n[Match]\nName=eth1.30\n\n[Network]\nConfigureWithoutCarrier=yes\nAddress=192.0.2.2/24\nAddress=2001:db8::2/64\n`,
      },
      {
        path: "/etc/systemd/network/80-trunk.network.d/kvmnet-vlan-eth1.30.conf",
        content: `${HEADER("eth1.30")}\n[Network]\nVLAN=eth1.30\n`,
      },
    ]);
  });

  it("802.1ad and a bridge port", () => {
    const [netdev, network] = renderNetworkd(inputs({ name: "qinq30", protocol: "802.1ad", bridge: "br10" }), "/etc/systemd/network/10-trunk.network");
    expect(netdev.content).toBe(`${HEADER("qinq30")}\n[NetDev]\nName=qinq30\nKind=vlan\n\n[VLAN]\nId=30\nProtocol=802.1ad\n`);
    expect(network.content).toBe(`${HEADER("qinq30")}\n[Match]\nName=qinq30\n\n[Network]\nConfigureWithoutCarrier=yes\nBridge=br10\n`);
  });

  it("the parent's file: what networkd applies now, or our own Bridge/VLAN file not loaded yet; the first by name wins as in networkd", () => {
    const facts = (lines: string[]) => vlanPersistFacts(withFacts(lines));
    expect(networkdParentFile("eth1", facts(["netfile 3 /run/systemd/network/10-trunk.network"]))).toBe("/run/systemd/network/10-trunk.network");
    expect(networkdParentFile("br10", facts(["ournetwork /etc/systemd/network/05-kvmnet-bridge-br10.network"]))).toBe("/etc/systemd/network/05-kvmnet-bridge-br10.network");
    expect(
      networkdParentFile("eth1.10", facts(["ournetwork /etc/systemd/network/05-kvmnet-vlan-eth1.10.network", "ournetwork /etc/systemd/network/05-kvmnet-bridge-br10.network"])),
    ).toBe("/etc/systemd/network/05-kvmnet-vlan-eth1.10.network");
    expect(networkdParentFile("br10", facts(["netfile 5 /etc/systemd/network/01-admin.network", "ournetwork /etc/systemd/network/05-kvmnet-bridge-br10.network"]))).toBe(
      "/etc/systemd/network/01-admin.network",
    );
    expect(networkdParentFile("eth1", facts(["ournetwork /etc/systemd/network/05-kvmnet-bridge-br10.network"]))).toBeUndefined();
  });

  it("refuses a parent networkd does not manage, and a bridge it does not create, naming persistence and the fix", () => {
    const snap = withFacts(["netfile 2 /etc/systemd/network/10-eth0.network"]);
    const msg = expectKvmnetThrow(
      () => persistVlan(inputs(), "networkd", snap),
      "Unsupported",
      /persistence "auto" \(networkd, the stack this host runs\) needs systemd-networkd to manage the parent eth1/,
    );
    expect(msg).toMatch(
      /VLAN=eth1\.30[\s\S]*hint: write a \.network file that matches eth1 \(e\.g\. \/etc\/systemd\/network\/10-eth1\.network[\s\S]*networkctl reload[\s\S]*persistence: "runtime"/,
    );
    const managed = withFacts(["netfile 3 /etc/systemd/network/10-trunk.network", "netdev bridge br99 /etc/systemd/network/br99.netdev"]);
    expectKvmnetThrow(
      () => persistVlan(inputs({ persistence: "networkd", bridge: "br10" }), "networkd", managed),
      "Unsupported",
      /persistence "networkd" cannot put eth1\.30 into bridge br10 at boot: no \.netdev file defines br10[\s\S]*hint: persist the bridge through networkd too/,
    );
    expect(persistVlan(inputs({ bridge: "br99" }), "networkd", managed).files.map((f) => f.path)).toEqual([
      "/etc/systemd/network/05-kvmnet-vlan-eth1.30.netdev",
      "/etc/systemd/network/05-kvmnet-vlan-eth1.30.network",
      "/etc/systemd/network/10-trunk.network.d/kvmnet-vlan-eth1.30.conf",
    ]);
  });
});

describe("NetworkManager", () => {
  it("a 0600 keyfile: static IPv4, IPv6 left to the kernel when it has no IPv6 address, a stable uuid", () => {
    expect(renderNetworkManager(inputs({ addresses: ["192.0.2.2/24", "192.0.2.3/24"] }))).toEqual([
      {
        path: "/etc/NetworkManager/system-connections/kvmnet-vlan-eth1.30.nmconnection",
        mode: "0600",
        content:
          `${HEADER("eth1.30")}\n[connection]\nid=kvmnet-vlan-eth1.30\nuuid=${profileUuid("kvmnet-vlan-eth1.30")}\ntype=vlan\ninterface-name=eth1.30\nautoconnect=true\n\n` +
          "[vlan]\nid=30\nparent=eth1\n\n[ipv4]\nmethod=manual\naddress1=192.0.2.2/24\naddress2=192.0.2.3/24\n\n[ipv6]\nmethod=ignore\n",
      },
    ]);
  });

  it("no addresses: IPv4 disabled; IPv6 addresses: manual with the kernel's EUI-64 link-local; mtu; 802.1ad", () => {
    const [f] = renderNetworkManager(inputs({ mtu: 1400, protocol: "802.1ad", addresses: ["2001:db8::2/64"] }));
    expect(f.content).toBe(
      `${HEADER("eth1.30")}\n[connection]\nid=kvmnet-vlan-eth1.30\nuuid=${profileUuid("kvmnet-vlan-eth1.30")}\ntype=vlan\ninterface-name=eth1.30\nautoconnect=true\n\n` +
        "[ethernet]\nmtu=1400\n\n[vlan]\nid=30\nparent=eth1\nprotocol=802.1ad\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=manual\naddr-gen-mode=eui64\naddress1=2001:db8::2/64\n",
    );
  });

  it("a bridge port: master and slave-type, no IP settings", () => {
    const [f] = renderNetworkManager(inputs({ bridge: "br10" }));
    expect(f.content).toBe(
      `${HEADER("eth1.30")}\n[connection]\nid=kvmnet-vlan-eth1.30\nuuid=${profileUuid("kvmnet-vlan-eth1.30")}\ntype=vlan\ninterface-name=eth1.30\nautoconnect=true\nmaster=br10\nslave-type=bridge\n\n` +
        "[vlan]\nid=30\nparent=eth1\n",
    );
  });

  it("uuid: RFC 4122 layout, one per profile id", () => {
    expect(profileUuid("kvmnet-vlan-eth1.30")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(profileUuid("kvmnet-vlan-eth1.30")).not.toBe(profileUuid("kvmnet-vlan-eth1.31"));
  });

  it("refuses 802.1ad before NetworkManager 1.42, an unmanaged parent, a bridge no profile creates", () => {
    const old = withFacts(["nmversion 1.40.18"]);
    expectKvmnetThrow(
      () => persistVlan(inputs({ protocol: "802.1ad" }), "networkmanager", old),
      "Unsupported",
      /NetworkManager 1\.40\.18 has no vlan\.protocol \(added in 1\.42\)[\s\S]*hint: upgrade NetworkManager, or use protocol 802\.1Q/,
    );
    expect(persistVlan(inputs({ protocol: "802.1ad" }), "networkmanager", withFacts(["nmversion 1.42.4"])).files).toHaveLength(1);
    expect(persistVlan(inputs(), "networkmanager", old).files).toHaveLength(1);
    expectKvmnetThrow(
      () => persistVlan(inputs({ parent: "eth0" }), "networkmanager", withFacts(["nmdev eth0 unmanaged"])),
      "Unsupported",
      /needs NetworkManager to manage the parent eth0, which it leaves unmanaged[\s\S]*hint: let NetworkManager manage eth0/,
    );
    const snap = withFacts([
      "nmprofile bridge br10 saved /etc/NetworkManager/system-connections/kvmnet-bridge-br10.nmconnection",
      "nmprofile ethernet br11 saved /x",
      // NetworkManager's own profile of a bridge made by hand: gone at reboot.
      "nmprofile bridge br11 generated /run/NetworkManager/system-connections/br11.nmconnection",
    ]);
    expect(persistVlan(inputs({ bridge: "br10" }), "networkmanager", snap).files).toHaveLength(1);
    expectKvmnetThrow(
      () => persistVlan(inputs({ bridge: "br11" }), "networkmanager", snap),
      "Unsupported",
      /no NetworkManager profile creates br11[\s\S]*nmcli connection add type bridge ifname br11/,
    );
  });
});

describe("ifupdown", () => {
  // What versions before the quoting fix wrote (values as they are): hosts have it, and it reads back as in sync.
  const legacy = [
    HEADER("eth1.30"),
    "auto eth1.30",
    "iface eth1.30 inet manual",
    "\tpre-up [ -e /sys/class/net/eth1 ] || ifup eth1",
    "\tpre-up ip link set dev eth1 up",
    // ifupdown's own VLAN support may have made eth1.30 (802.1Q, id from the name) before our pre-up: made anew.
    "\tpre-up [ ! -e /sys/class/net/eth1.30 ] || ip link del dev eth1.30",
    "\tpre-up ip link add link eth1 name eth1.30 type vlan id 30 protocol 802.1Q",
    "\tpre-up ip link set dev eth1.30 mtu 1400",
    "\tup ip link set dev eth1.30 up",
    "\tup ip addr add 192.0.2.2/24 dev eth1.30",
    "\tup ip addr add 2001:db8::2/64 dev eth1.30",
    "\tpost-down [ ! -e /sys/class/net/eth1.30 ] || ip link del dev eth1.30",
    "",
  ].join("\n");
  const quoted = [
    HEADER("eth1.30"),
    "auto eth1.30",
    "iface eth1.30 inet manual",
    "\tpre-up [ -e '/sys/class/net/eth1' ] || ifup 'eth1'",
    "\tpre-up ip link set dev 'eth1' up",
    "\tpre-up [ ! -e '/sys/class/net/eth1.30' ] || ip link del dev 'eth1.30'",
    "\tpre-up ip link add link 'eth1' name 'eth1.30' type vlan id 30 protocol '802.1Q'",
    "\tpre-up ip link set dev 'eth1.30' mtu 1400",
    "\tup ip link set dev 'eth1.30' up",
    "\tup ip addr add '192.0.2.2/24' dev 'eth1.30'",
    "\tup ip addr add '2001:db8::2/64' dev 'eth1.30'",
    "\tpost-down [ ! -e '/sys/class/net/eth1.30' ] || ip link del dev 'eth1.30'",
    "",
  ].join("\n");
  const addressed = inputs({ mtu: 1400, addresses: ["192.0.2.2/24", "2001:db8::2/64"] });

  it("one stanza that makes the VLAN with ip, brings its parent up first, addresses on up, removed on post-down; every value quoted", () => {
    expect(renderIfupdown(addressed)).toEqual([{ path: "/etc/network/interfaces.d/kvmnet-vlan-eth1.30", content: quoted, accepts: [legacy] }]);
  });

  it("reads back the stanza as written before the quoting fix, and as written now, as in sync; anything else is drift", () => {
    const want = persistVlan(addressed, "ifupdown", withFacts(["ifsource source /etc/network/interfaces.d/*"]));
    const b64 = (t: string) => Buffer.from(t).toString("base64");
    const host = (content: string) =>
      parseSnapshot(
        `${fixture}\n@@kvmnet-begin persist\n@@manifest ${manifestPath("vlanSubinterface", "eth1.30")}\n@@file /etc/network/interfaces.d/kvmnet-vlan-eth1.30 ${b64(content)}\n@@kvmnet-end persist 0\n`,
        "fixture",
      );
    for (const content of [legacy, quoted]) {
      expect(persistDrift("vlanSubinterface", "eth1.30", want, host(content))).toEqual([]);
      expect(persistSteps("vlanSubinterface", "eth1.30", want, host(content))).toEqual([]);
    }
    expect(persistDrift("vlanSubinterface", "eth1.30", want, host(legacy.replace("mtu 1400", "mtu 1500")))).toEqual([
      "/etc/network/interfaces.d/kvmnet-vlan-eth1.30 differs from what the inputs render",
    ]);
  });

  it("a bridge port: the bridge is brought up first when its stanza comes later", () => {
    const [f] = renderIfupdown(inputs({ name: "v30", protocol: "802.1ad", bridge: "br10" }));
    expect(f.content).toBe(
      [
        HEADER("v30"),
        "auto v30",
        "iface v30 inet manual",
        "\tpre-up [ -e '/sys/class/net/eth1' ] || ifup 'eth1'",
        "\tpre-up ip link set dev 'eth1' up",
        "\tpre-up [ ! -e '/sys/class/net/v30' ] || ip link del dev 'v30'",
        "\tpre-up ip link add link 'eth1' name 'v30' type vlan id 30 protocol '802.1ad'",
        "\tpre-up [ -e '/sys/class/net/br10' ] || ifup 'br10'",
        "\tup ip link set dev 'v30' up",
        "\tup ip link set dev 'v30' master 'br10'",
        "\tpost-down [ ! -e '/sys/class/net/v30' ] || ip link del dev 'v30'",
        "",
      ].join("\n"),
    );
  });

  it.each([
    ["source /etc/network/interfaces.d/*", "kvmnet-vlan-eth1.30", true],
    ["source interfaces.d/*", "kvmnet-vlan-eth1.30", true],
    ["source-directory /etc/network/interfaces.d", "kvmnet-vlan-v30", true],
    ["source-directory interfaces.d", "kvmnet-vlan-eth1.30", false],
    ["source /etc/network/other", "kvmnet-vlan-v30", false],
  ])("%s reads %s: %s", (line, file, reads) => {
    expect(ifupdownReads(file, [line])).toBe(reads);
  });

  it("refuses when ifupdown would not read the file, or would not bring the bridge up", () => {
    expectKvmnetThrow(
      () => persistVlan(inputs(), "ifupdown", withFacts([])),
      "Unsupported",
      /does not source \/etc\/network\/interfaces\.d\/\*[\s\S]*hint: add the line "source \/etc\/network\/interfaces\.d\/\*"/,
    );
    expectKvmnetThrow(
      () => persistVlan(inputs(), "ifupdown", withFacts(["ifsource source-directory /etc/network/interfaces.d"])),
      "Unsupported",
      /skips file names with a dot \(kvmnet-vlan-eth1\.30\)[\s\S]*hint: give the VLAN a name without a dot/,
    );
    const snap = withFacts(["ifsource source /etc/network/interfaces.d/*", "ifauto br10"]);
    expect(persistVlan(inputs({ bridge: "br10" }), "ifupdown", snap).files).toHaveLength(1);
    expectKvmnetThrow(() => persistVlan(inputs({ bridge: "br11" }), "ifupdown", snap), "Unsupported", /ifupdown does not bring br11 up[\s\S]*"auto br11"/);
  });
});

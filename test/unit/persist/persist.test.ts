import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../provider/observe";
import { dropInDirOf, manifestPath, persistDrift, persistFacts, persistSteps, resolveBackend, stableUuid, withPersistFiles } from "../../../provider/persist";
import type { Plan } from "../../../provider/render";
import { literal } from "../../../provider/shell";
import { bridgePersist } from "../../../provider/resources/bridge/persist";
import { observeBridge, planBridgeDelete } from "../../../provider/resources/bridge/plan";
import { bridgeInputsSchema } from "../../../provider/resources/bridge/schema";
import { ROUTES_SECTION, takeoverRecordPath } from "../../../provider/resources/bridge/takeover";
import { expectKvmnetThrow } from "../../support/expectError";

const fixture = fs.readFileSync(path.join(__dirname, "../../fixtures/observe/bridge-br0-port-v1.txt"), "utf8");
const b64 = (s: string) => Buffer.from(s).toString("base64");

/** The fixture host plus a persist section as the observe script prints it. */
function hostWith(persistLines: string[], systemd = true): HostSnapshot {
  const text = fixture.replace(/@@kvmnet-begin systemd\n[^\n]*\n/, `@@kvmnet-begin systemd\n${systemd ? "yes" : "no"}\n`);
  return parseSnapshot(`${text}\n@@kvmnet-begin persist\n${persistLines.join("\n")}\n@@kvmnet-end persist 0\n`, "fixture");
}

describe("stack detection", () => {
  it("prefers NetworkManager, then networkd, then ifupdown, else runtime", () => {
    const nm = hostWith(["active NetworkManager active", "active systemd-networkd active", "active networking active", "ifup yes"]);
    expect(resolveBackend("auto", nm, "x")).toBe("networkmanager");
    const nd = hostWith(["active NetworkManager inactive", "active systemd-networkd active", "active networking inactive"]);
    expect(resolveBackend("auto", nd, "x")).toBe("networkd");
    const ifu = hostWith(["active NetworkManager inactive", "active systemd-networkd inactive", "active networking active", "ifup yes"]);
    expect(resolveBackend("auto", ifu, "x")).toBe("ifupdown");
    // sysvinit host: ifupdown configured it at boot (its state file), no systemd.
    expect(resolveBackend("auto", hostWith(["ifstate yes", "ifup yes"], false), "x")).toBe("ifupdown");
    // networking.service active but no ifup binary: not ifupdown.
    expect(persistFacts(hostWith(["active networking active"])).ifupdown).toBe(false);
    expect(resolveBackend("auto", hostWith([]), "x")).toBe("runtime");
  });

  it("refuses an explicit backend the host does not run, naming what it runs", () => {
    const nd = hostWith(["active systemd-networkd active"]);
    expectKvmnetThrow(
      () => resolveBackend("networkmanager", nd, "bridge br0"),
      "Unsupported",
      /bridge br0: persistence "networkmanager" needs NetworkManager.service active on the host, which runs systemd-networkd/,
    );
    expect(resolveBackend("runtime", nd, "x")).toBe("runtime");
  });
});

describe("persisted files", () => {
  const want = {
    files: [
      { path: "/etc/systemd/system/kvmnet-a.service", content: "A" },
      { path: "/etc/x/b", link: "/etc/x/target" },
    ],
  };

  it("writes missing files, records them in the manifest, reloads systemd around them", () => {
    const snap = hostWith([]);
    const steps = persistSteps("natNetwork", "n1", want, snap);
    expect(steps.map((s) => s.description)).toEqual([
      "note the stack's configuration reload",
      "write /etc/systemd/system/kvmnet-a.service",
      "write /etc/x/b",
      `record the files of natNetwork n1 in ${manifestPath("natNetwork", "n1")}`,
      "reload the stack's view of the persisted files",
    ]);
    // Undone, systemd reloads after the files are restored: the first step's undo runs last.
    expect(steps[0].undo?.text).toBe("systemctl daemon-reload");
    expect(steps[1].undo?.text).toBe("rm -f '/etc/systemd/system/kvmnet-a.service'");
    expect(steps[2].run.text).toBe("mkdir -p '/etc/x' && ln -sfn '/etc/x/target' '/etc/x/b'");
    expect(persistDrift("natNetwork", "n1", want, snap)).toEqual(["/etc/systemd/system/kvmnet-a.service is missing", "/etc/x/b is missing"]);
  });

  it("is in sync when the host has the same files; reports edits and leftovers as drift and repairs only them", () => {
    const m = manifestPath("natNetwork", "n1");
    const inSync = hostWith([`@@manifest ${m}`, `@@file /etc/systemd/system/kvmnet-a.service ${b64("A\n")}`, "@@link /etc/x/b /etc/x/target"]);
    expect(persistSteps("natNetwork", "n1", want, inSync)).toEqual([]);
    expect(persistDrift("natNetwork", "n1", want, inSync)).toEqual([]);

    const drifted = hostWith([
      `@@manifest ${m}`,
      `@@file /etc/systemd/system/kvmnet-a.service ${b64("edited\n")}`,
      "@@link /etc/x/b /etc/x/target",
      `@@file /etc/x/old ${b64("o\n")}`,
    ]);
    expect(persistDrift("natNetwork", "n1", want, drifted)).toEqual(["/etc/systemd/system/kvmnet-a.service differs from what the inputs render", "/etc/x/old is left over"]);
    const steps = persistSteps("natNetwork", "n1", want, drifted);
    expect(steps.map((s) => s.description)).toEqual([
      "note the stack's configuration reload",
      "write /etc/systemd/system/kvmnet-a.service",
      "remove /etc/x/old",
      `record the files of natNetwork n1 in ${m}`,
      "reload the stack's view of the persisted files",
    ]);
    // The edited file is put back as it was if a later step fails.
    expect(steps[1].undo?.text).toContain("edited");
  });

  it("removes every listed file and the manifest on delete", () => {
    const m = manifestPath("bridge", "br0");
    const snap = hostWith([`@@manifest ${m}`, `@@file /etc/systemd/network/05-kvmnet-bridge-br0.netdev ${b64("x\n")}`, "@@missing /etc/systemd/network/gone.network"]);
    const steps = persistSteps("bridge", "br0", { files: [] }, snap);
    expect(steps.map((s) => s.description)).toEqual(["remove /etc/systemd/network/05-kvmnet-bridge-br0.netdev", `remove ${m}`]);
  });

  it("where networkd configures a link from one of the files now and the change removes it, the files change and networkd reloads before the live steps; else after", () => {
    const m = manifestPath("bridge", "br0");
    const port = "/etc/systemd/network/05-kvmnet-bridge-br0-port-eth0.network";
    const files = [`@@manifest ${m}`, `@@file /etc/systemd/network/05-kvmnet-bridge-br0.netdev ${b64("x\n")}`, `@@file ${port} ${b64("y\n")}`];
    const live: Plan = { guards: [], steps: [{ description: "give eth0 back", run: literal("ip link set dev eth0 nomaster") }] };
    const order = (snap: HostSnapshot) => withPersistFiles(live, "bridge", "br0", { files: [] }, snap).steps.map((s) => s.description);

    // Written since the boot (networkd has not read them): the teardown first, the files after.
    expect(order(hostWith(["active systemd-networkd active", ...files]))).toEqual([
      "give eth0 back",
      "remove /etc/systemd/network/05-kvmnet-bridge-br0.netdev",
      `remove ${port}`,
      `remove ${m}`,
    ]);
    // Read at boot: networkd configures eth0 from our port file, and would put it back into the bridge.
    const held = withPersistFiles(live, "bridge", "br0", { files: [] }, hostWith(["active systemd-networkd active", `@@applied ${port}`, ...files]));
    expect(held.steps.map((s) => s.description)).toEqual([
      "note systemd-networkd's reload",
      "remove /etc/systemd/network/05-kvmnet-bridge-br0.netdev",
      `remove ${port}`,
      `remove ${m}`,
      "systemd-networkd lets go of the links it configured from removed files",
      "give eth0 back",
    ]);
    expect(held.steps[4].run.text).toBe("networkctl reload");
    // Undone, networkd reloads once the files are back (the first step's undo runs last).
    expect(held.steps[0].undo?.text).toBe("networkctl reload");
    expect(held.steps[2].undo?.text).toContain(port);
    // An update that drops the port (its file goes): the same order. One that keeps the file: after.
    const netdev = { path: "/etc/systemd/network/05-kvmnet-bridge-br0.netdev", content: "x" };
    const heldHost = hostWith(["active systemd-networkd active", `@@applied ${port}`, ...files]);
    expect(withPersistFiles(live, "bridge", "br0", { files: [netdev] }, heldHost).steps.map((s) => s.description)).toEqual([
      "note systemd-networkd's reload",
      `remove ${port}`,
      `record the files of bridge br0 in ${m}`,
      "systemd-networkd lets go of the links it configured from removed files",
      "give eth0 back",
    ]);
    expect(withPersistFiles(live, "bridge", "br0", { files: [netdev, { path: port, content: "y2" }] }, heldHost).steps.map((s) => s.description)).toEqual([
      "give eth0 back",
      `write ${port}`,
    ]);
    // Another object's file held by networkd does not reorder this one's delete.
    expect(order(hostWith(["active systemd-networkd active", "@@applied /etc/systemd/network/05-kvmnet-bridge-br9.network", ...files]))[0]).toBe("give eth0 back");
  });

  it("where NetworkManager holds a port through our profile and an update drops the port while the bridge stays, the profile goes first and the step after waits for the release", () => {
    const m = manifestPath("bridge", "br0");
    const dir = "/etc/NetworkManager/system-connections";
    const bridge = { path: `${dir}/kvmnet-bridge-br0.nmconnection`, content: "[connection]\nid=kvmnet-bridge-br0\ntype=bridge\ninterface-name=br0\n", mode: "0600" };
    const portContent = "[connection]\nid=kvmnet-bridge-br0-port-eth0\ntype=ethernet\ninterface-name=eth0\nmaster=br0\nslave-type=bridge\n";
    const port = `${dir}/kvmnet-bridge-br0-port-eth0.nmconnection`;
    const files = [`@@manifest ${m}`, `@@file ${bridge.path} ${b64(bridge.content)}`, `@@file ${port} ${b64(portContent)}`];
    const live: Plan = { guards: [], steps: [{ description: "give eth0 back", run: literal("ip link set dev eth0 nomaster") }] };
    const order = (want: { files: (typeof bridge)[] }, snap: HostSnapshot) => withPersistFiles(live, "bridge", "br0", want, snap).steps.map((s) => s.description);
    const nmHost = hostWith(["active NetworkManager active", ...files]);

    const held = withPersistFiles(live, "bridge", "br0", { files: [bridge] }, nmHost);
    expect(held.steps.map((s) => s.description)).toEqual([
      "note the stack's configuration reload",
      `remove ${port}`,
      `record the files of bridge br0 in ${m}`,
      "reload the stack's view of the persisted files",
      "NetworkManager releases eth0 from br0 (its port profile kvmnet-bridge-br0-port-eth0 was removed)",
      "give eth0 back",
    ]);
    const wait = held.steps[4].run.text;
    expect(wait).toContain("'/sys/class/net/eth0/master'");
    expect(wait).toContain("nmcli -g GENERAL.CONNECTION device show 'eth0'");
    expect(wait).toContain("= 'kvmnet-bridge-br0-port-eth0'");
    // A delete (NetworkManager would delete the bridge with its profile), a host where
    // NetworkManager is not running, or a port file that stays: the usual order.
    expect(order({ files: [] }, nmHost)[0]).toBe("give eth0 back");
    expect(order({ files: [bridge] }, hostWith(["active NetworkManager inactive", ...files]))[0]).toBe("give eth0 back");
    expect(order({ files: [bridge, { path: port, content: portContent.replace("eth0\nmaster", "eth0\nmtu=1400\nmaster"), mode: "0600" }] }, nmHost)[0]).toBe("give eth0 back");
  });

  it("takes a systemd drop-in directory along when removing ours empties it, and no other directory", () => {
    const m = manifestPath("vlansubinterface", "eth0.10");
    const dropIn = "/etc/systemd/network/10-eth0.network.d/kvmnet-vlan-eth0.10.conf";
    const snap = hostWith([`@@manifest ${m}`, `@@file ${dropIn} ${b64("x\n")}`, `@@file /etc/network/interfaces.d/kvmnet-vlan-eth0.10 ${b64("y\n")}`]);
    const steps = persistSteps("vlansubinterface", "eth0.10", { files: [] }, snap);
    const remove = steps.find((s) => s.description === `remove ${dropIn}`);
    // rmdir only removes it empty: an admin's own drop-ins there keep it.
    expect(remove?.run.text).toBe(`rm -f '${dropIn}' && { rmdir '/etc/systemd/network/10-eth0.network.d' 2>/dev/null || true; }`);
    // Undone, the directory comes back first.
    expect(remove?.undo?.text).toMatch(/^mkdir -p '\/etc\/systemd\/network\/10-eth0\.network\.d'\n/);
    expect(steps.find((s) => s.description === "remove /etc/network/interfaces.d/kvmnet-vlan-eth0.10")?.run.text).toBe("rm -f '/etc/network/interfaces.d/kvmnet-vlan-eth0.10'");
  });

  it("knows a drop-in directory from the system's own directories", () => {
    expect(dropInDirOf("/etc/systemd/network/10-eth0.network.d/a.conf")).toBe("/etc/systemd/network/10-eth0.network.d");
    expect(dropInDirOf("/etc/systemd/system/nftables.service.d/kvmnet-nat-n.conf")).toBe("/etc/systemd/system/nftables.service.d");
    expect(dropInDirOf("/etc/systemd/system/sysinit.target.wants/kvmnet-vfio-0000:00:03.0.service")).toBeUndefined();
    expect(dropInDirOf("/etc/systemd/network/05-kvmnet-bridge-br0.netdev")).toBeUndefined();
    expect(dropInDirOf("/etc/sysctl.d/kvmnet.conf")).toBeUndefined();
    expect(dropInDirOf("/etc/network/interfaces.d/kvmnet-bridge-br0")).toBeUndefined();
  });
});

describe("Bridge persistence", () => {
  const snap = hostWith([]);
  const br = bridgeInputsSchema.parse({
    connection: { host: "h" },
    name: "br7",
    stp: true,
    forwardDelay: 4,
    priority: 4096,
    mtu: 1500,
    macAddress: "52:54:00:00:00:07",
    ports: ["v1"],
    addresses: ["10.7.0.1/24", "fd00:7::1/64"],
    persistence: "auto",
  });

  it("networkd: a netdev with the options, a network with the addresses, one network per port", () => {
    const { files } = bridgePersist(br, "networkd", snap);
    expect(files.map((f) => f.path)).toEqual([
      "/etc/systemd/network/05-kvmnet-bridge-br7.netdev",
      "/etc/systemd/network/05-kvmnet-bridge-br7.network",
      "/etc/systemd/network/05-kvmnet-bridge-br7-port-v1.network",
    ]);
    expect(files[0].content).toContain("[NetDev]\nName=br7\nKind=bridge\nMACAddress=52:54:00:00:00:07\nMTUBytes=1500\n\n[Bridge]\nSTP=yes\nForwardDelaySec=4s\nPriority=4096");
    expect(files[1].content).toContain("[Match]\nName=br7\n\n[Network]\nConfigureWithoutCarrier=yes\nAddress=10.7.0.1/24\nAddress=fd00:7::1/64");
    expect(files[2].content).toContain("[Match]\nName=v1\n\n[Network]\nBridge=br7");
  });

  it("NetworkManager: 0600 keyfiles with stable UUIDs; whole seconds only; Ethernet ports only", () => {
    const plain = bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br7", stp: false, forwardDelay: 4, macAddress: "52:54:00:00:00:07", addresses: ["10.7.0.1/24"] });
    const { files } = bridgePersist(plain, "networkmanager", snap);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatchObject({ path: "/etc/NetworkManager/system-connections/kvmnet-bridge-br7.nmconnection", mode: "0600" });
    expect(files[0].content).toContain(`id=kvmnet-bridge-br7\nuuid=${stableUuid("kvmnet-bridge-br7")}\ntype=bridge\ninterface-name=br7`);
    expect(files[0].content).toContain("[bridge]\nstp=false\nforward-delay=4\n\n[ipv4]\nmethod=manual\naddress1=10.7.0.1/24\n\n[ipv6]\nmethod=ignore");
    expect(stableUuid("kvmnet-bridge-br7")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expectKvmnetThrow(() => bridgePersist({ ...plain, forwardDelay: 2.5 }, "networkmanager", snap), "InvalidArgument", /forwardDelay: NetworkManager takes whole seconds/);
    // v1 is a veth: NM profiles are typed by device.
    expectKvmnetThrow(() => bridgePersist(br, "networkmanager", snap), "Unsupported", /port v1 is a veth interface/);
  });

  it("ifupdown: one interfaces.d stanza of quoted ip commands", () => {
    const { files } = bridgePersist(br, "ifupdown", snap);
    expect(files.map((f) => f.path)).toEqual(["/etc/network/interfaces.d/kvmnet-bridge-br7"]);
    expect(files[0].content).toContain(
      [
        "auto br7",
        "iface br7 inet manual",
        "\tpre-up ip link add name 'br7' address '52:54:00:00:00:07' type bridge 'stp_state' 1 'forward_delay' 400 'priority' 4096",
        "\tpre-up ip link set dev 'br7' mtu 1500",
        "\tpre-up ip link set dev 'v1' master 'br7' && ip link set dev 'v1' up",
        "\tup ip addr add '10.7.0.1/24' dev 'br7'",
        "\tup ip addr add 'fd00:7::1/64' dev 'br7'",
        "\tpost-down ip link del dev 'br7'",
      ].join("\n"),
    );
  });
});

describe("Bridge persistence of a taken-over uplink", () => {
  // v1p carries 10.9.1.5/24 and, in the routes section, the default route via 10.9.1.1.
  const routes = [
    JSON.stringify([
      { dst: "default", gateway: "10.9.1.1", dev: "v1p", protocol: "static", metric: 50, flags: [] },
      { dst: "10.9.1.0/24", dev: "v1p", protocol: "kernel", scope: "link", prefsrc: "10.9.1.5", flags: [] },
      { dst: "10.50.0.0/16", gateway: "10.9.1.254", dev: "v1p", protocol: "boot", flags: [] },
    ]),
    "",
    JSON.stringify([{ dst: "fe80::/64", dev: "v1p", protocol: "kernel", metric: 256, flags: [] }]),
  ].join("\n");
  const withRoutes = (persistLines: string[], edit?: (s: HostSnapshot) => void): HostSnapshot => {
    const text = fixture.replace(/@@kvmnet-begin systemd\n[^\n]*\n/, "@@kvmnet-begin systemd\nyes\n");
    const s = parseSnapshot(
      `${text}\n@@kvmnet-begin persist\n${persistLines.join("\n")}\n@@kvmnet-end persist 0\n@@kvmnet-begin ${ROUTES_SECTION}\n${routes}\n@@kvmnet-end ${ROUTES_SECTION} 0\n`,
      "fixture",
    );
    edit?.(s);
    return s;
  };
  const up = bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br7", macAddress: "52:54:00:00:00:07", ports: ["v1p"], takeOverUplink: true, persistence: "auto" });
  const record = {
    v1p: {
      addresses: ["10.9.1.5/24"],
      routes: [
        { dst: "default", gateway: "10.9.1.1", metric: 50 },
        { dst: "10.50.0.0/16", gateway: "10.9.1.254" },
      ],
    },
  };

  it("networkd: the bridge's network carries the uplink's addresses and routes; the record of what moved is written with it", () => {
    const { files } = bridgePersist(up, "networkd", withRoutes([]));
    expect(files.map((f) => f.path)).toEqual([
      "/etc/systemd/network/05-kvmnet-bridge-br7.netdev",
      "/etc/systemd/network/05-kvmnet-bridge-br7.network",
      "/etc/systemd/network/05-kvmnet-bridge-br7-port-v1p.network",
      takeoverRecordPath("br7"),
    ]);
    expect(files[1].content).toContain(
      "[Network]\nConfigureWithoutCarrier=yes\nAddress=10.9.1.5/24\n\n[Route]\nGateway=10.9.1.1\nMetric=50\n\n[Route]\nDestination=10.50.0.0/16\nGateway=10.9.1.254",
    );
    expect(JSON.parse(files[3].content ?? "")).toEqual(record);
  });

  it("renders the same files after the takeover and after a reboot (from the record), and delete still knows what to give back", () => {
    // br0 exists on the fixture host (port v1); v1p is about to be taken over.
    const up0 = bridgeInputsSchema.parse({ connection: { host: "h" }, name: "br0", ports: ["v1", "v1p"], takeOverUplink: true, persistence: "auto" });
    const before = bridgePersist(up0, "networkd", withRoutes([]));
    expect(JSON.parse(before.files.find((f) => f.path === takeoverRecordPath("br0"))?.content ?? "")).toEqual(record);
    // After a reboot: v1p is a port of br0 and has no address of its own, /run is empty, the files are ours.
    const m = manifestPath("bridge", "br0");
    const rebooted = withRoutes([`@@manifest ${m}`, ...before.files.map((f) => `@@file ${f.path} ${b64(f.content + "\n")}`)], (s) => {
      const v1p = s.links.find((l) => l.ifname === "v1p");
      if (v1p) v1p.master = "br0";
      const a = s.addrs.find((x) => x.ifname === "v1p");
      if (a) a.addr_info = [];
    });
    expect(bridgePersist(up0, "networkd", rebooted)).toEqual(before);
    expect(persistDrift("bridge", "br0", before, rebooted)).toEqual([]);
    expect(observeBridge(rebooted, "br0").takenOver).toEqual({ v1p: ["10.9.1.5/24"] });
    const del = planBridgeDelete("br0", rebooted, 60);
    expect(del.actions).toContainEqual(expect.objectContaining({ op: "giveBack", port: "v1p" }));
    expect(del.confirm).toBeDefined();
  });

  it("NetworkManager: manual addresses, the default route as gateway, other routes as routeN", () => {
    const snap = withRoutes([], (s) => {
      const v1p = s.links.find((l) => l.ifname === "v1p");
      if (v1p) v1p.linkinfo = undefined; // an Ethernet NIC, as NM port profiles need
    });
    const { files } = bridgePersist(up, "networkmanager", snap);
    expect(files[0].content).toContain("[ipv4]\nmethod=manual\naddress1=10.9.1.5/24\ngateway=10.9.1.1\nroute-metric=50\nroute1=10.50.0.0/16,10.9.1.254\n\n[ipv6]\nmethod=ignore");
    expect(files[1].content).toContain("interface-name=v1p\nmaster=br7\nslave-type=bridge\nautoconnect=true\nautoconnect-priority=999");
    expect(files.map((f) => f.path)).toContain(takeoverRecordPath("br7"));
  });

  it("refuses an uplink configured by DHCP, and ifupdown (the uplink's own stanza would come back), naming the uplink", () => {
    const leased = withRoutes([], (s) => {
      const a = s.addrs.find((x) => x.ifname === "v1p");
      if (a) a.addr_info = a.addr_info.map((i) => ({ ...i, dynamic: true }));
    });
    expectKvmnetThrow(() => bridgePersist(up, "networkd", leased), "Unsupported", /cannot persist the takeover of v1p: its address 10.9.1.5\/24 is a DHCP lease/);
    expectKvmnetThrow(() => bridgePersist(up, "ifupdown", withRoutes([])), "Unsupported", /persistence "ifupdown" of a taken-over uplink \(v1p\) is not supported/);
    // Without an uplink among the ports there is nothing to carry: ifupdown is fine.
    expect(bridgePersist({ ...up, ports: [] }, "ifupdown", withRoutes([])).files).toHaveLength(1);
  });
});

describe("kinds that persist nothing yet", () => {
  it("refuse any persistence but runtime at check, naming the field, before any host is touched", async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { z } = require("zod") as typeof import("zod");
    const { makeKindProvider } = await import("../../../provider/resources/lifecycle");
    const { persistence } = await import("../../../provider/persist");
    const never = () => {
      throw new Error("must not be called");
    };
    const p = makeKindProvider({
      kind: "demo",
      schema: z.object({ connection: z.any(), name: z.string(), persistence: persistence.default("runtime") }),
      inputKeys: ["connection", "name", "persistence"],
      replaces: () => [],
      deleteBeforeReplace: () => false,
      plan: never,
      planDelete: never,
      verify: never,
      outputs: never,
    });
    const bad = await p.check({}, { connection: { host: "h" }, name: "x", persistence: "auto" });
    expect(bad.failures).toEqual([{ property: "persistence", reason: expect.stringContaining('demo persists only "runtime" in this release') }]);
    expect((await p.check({}, { connection: { host: "h" }, name: "x", persistence: "runtime" })).failures).toBeUndefined();
  });
});

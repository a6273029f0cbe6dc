import { bridgeProvider } from "../../../provider/resources/bridge";
import { creationRecord } from "../../../provider/resources/creationRecord";
import type { KindProvider } from "../../../provider/resources/kind";
import { natNetworkProvider } from "../../../provider/resources/natNetwork";
import { pciPassthroughProvider } from "../../../provider/resources/pciPassthrough";
import { portForwardProvider } from "../../../provider/resources/portForward";
import { vlanSubinterfaceProvider } from "../../../provider/resources/vlanSubinterface";
import { UNKNOWN } from "../../../provider/validate";

/** The connection and stored NatNetwork inputs the describes below share. */
const connection = { host: "kvm1.example.net" };
const nat = {
  connection,
  name: "lab",
  bridgeName: "kvn-lab",
  mode: "nat",
  subnet: "192.168.122.0/24",
  gateway: "192.168.122.1",
  dhcp: false,
  dns: { enabled: true, hosts: [] },
  persistence: "runtime",
};

/**
 * #14 item 13: the engine sends UNKNOWN for values not known during preview,
 * and check cannot tell that from a program that typed the same string (the
 * dynamic provider's check gets no preview flag). create and update run only
 * with known values, so there the placeholder is refused like any invalid
 * value, naming the field, before any connection to the host is made.
 */
describe("the unknown placeholder at create/update", () => {
  const bridge = { connection, name: "br0", stp: false, ports: [], addresses: [], adopt: false, takeOverUplink: false, confirmTimeoutSec: 60, persistence: "runtime" };

  it("is refused by create as a Bridge name, naming the field", async () => {
    await expect(bridgeProvider.create({ ...bridge, name: UNKNOWN })).rejects.toMatchObject({
      kind: "InvalidArgument",
      message: expect.stringMatching(/name: is the engine's placeholder for an unknown value/),
    });
  });

  it("is refused by update as a new Bridge port, naming the nested path", async () => {
    await expect(bridgeProvider.update("kvm1.example.net/bridge/br0", bridge, { ...bridge, ports: ["eth1", UNKNOWN] })).rejects.toMatchObject({
      kind: "InvalidArgument",
      message: expect.stringMatching(/ports\.1: is the engine's placeholder for an unknown value/),
    });
  });

  it("is refused by create even where the field's own rule would accept it (a connection port, a dhcp host name)", async () => {
    // The connection's port is invalid as a string anyway; the hostname shape is a valid DNS label.
    const nat = {
      connection: { host: "kvm1.example.net", port: UNKNOWN },
      name: "lab",
      subnet: "192.168.122.0/24",
      dhcp: { start: "192.168.122.100", end: "192.168.122.200", hosts: [{ mac: "52:54:00:00:00:10", ip: "192.168.122.10", hostname: UNKNOWN }] },
    };
    const err = await natNetworkProvider.create(nat).then(
      () => undefined,
      (e: unknown) => e as { kind: string; message: string },
    );
    expect(err?.kind).toBe("InvalidArgument");
    expect(err?.message).toMatch(/connection\.port: is the engine's placeholder/);
    expect(err?.message).toMatch(/dhcp\.hosts\.0\.hostname: is the engine's placeholder/);
  });

  // Values each kind's own rules accept: connection.host is a valid host name, description valid nft comment text.
  const known = { host: "kvm1.example.net" };
  const cases: [string, KindProvider, Record<string, unknown>, RegExp][] = [
    ["Bridge connection.host", bridgeProvider, { connection: { host: UNKNOWN }, name: "br0" }, /connection\.host: is the engine's placeholder/],
    ["NatNetwork connection.host", natNetworkProvider, { connection: { host: UNKNOWN }, name: "lab", subnet: "192.168.122.0/24" }, /connection\.host: /],
    ["VlanSubinterface connection.host", vlanSubinterfaceProvider, { connection: { host: UNKNOWN }, parent: "eth0", vlanId: 10 }, /connection\.host: /],
    ["PciPassthrough connection.host", pciPassthroughProvider, { connection: { host: UNKNOWN }, address: "0000:65:00.0" }, /connection\.host: /],
    [
      "PortForward description",
      portForwardProvider,
      { connection: known, protocol: "tcp", hostPort: 8080, destination: "192.168.122.10", description: UNKNOWN },
      /description: is the engine's placeholder/,
    ],
  ];
  it.each(cases)("is refused by create in %s, before any connection", async (_label, provider, inputs, re) => {
    await expect(provider.create(inputs)).rejects.toMatchObject({ kind: "InvalidArgument", message: expect.stringMatching(re) });
  });

  it("is still validated around by check (preview)", async () => {
    const r = await bridgeProvider.check({}, { connection, name: UNKNOWN });
    expect(r.failures).toBeUndefined();
  });
});

/**
 * A replacement that deletes first would delete the old object during up
 * before create refuses a literal placeholder in the new inputs. diff cannot
 * tell a literal from a preview's unknown either, so with the placeholder in
 * the new inputs it never deletes first: during up (known values) it is a
 * literal and create refuses it with the old object intact; during preview
 * only the displayed order differs, and up's own diff decides with known values.
 */
describe("the unknown placeholder in diff", () => {
  const bridge = { connection, name: "br0", stp: false, ports: ["eth1"], addresses: [], adopt: false, takeOverUplink: false, confirmTimeoutSec: 60, persistence: "runtime" };
  const forward = { connection, protocol: "tcp", hostPort: 8080, destination: "192.168.122.10", destinationPort: 8080, sourceCidrs: [], hairpin: true, persistence: "runtime" };
  const pci = { connection, address: "0000:65:00.0", driver: "vfio-pci", includeIommuGroup: false, force: false, persistence: "runtime" };
  const cases: [string, KindProvider, Record<string, unknown>, Record<string, unknown>, string][] = [
    ["Bridge name (with ports)", bridgeProvider, bridge, { name: UNKNOWN }, "name"],
    ["Bridge rename with a placeholder port", bridgeProvider, bridge, { name: "br1", ports: [UNKNOWN] }, "name"],
    ["NatNetwork subnet", natNetworkProvider, nat, { subnet: UNKNOWN }, "subnet"],
    [
      "VlanSubinterface vlanId",
      vlanSubinterfaceProvider,
      { connection, parent: "eth1", vlanId: 10, name: "eth1.10", protocol: "802.1Q", addresses: [], adopt: false, persistence: "runtime" },
      { vlanId: UNKNOWN },
      "vlanId",
    ],
    ["PortForward hostPort", portForwardProvider, forward, { hostPort: UNKNOWN }, "hostPort"],
    ["PciPassthrough address", pciPassthroughProvider, pci, { address: UNKNOWN }, "address"],
  ];
  it.each(cases)("%s: replaces, creating first", async (_label, provider, olds, patch, field) => {
    const d = await provider.diff("id", olds, { ...olds, ...patch });
    expect(d.replaces).toContain(field);
    expect(d.deleteBeforeReplace).toBe(false);
  });
});

/**
 * State written before #14's name rules may hold interface names check now
 * refuses (".x", a bridge "x-port-y"). update parses the old inputs first, and
 * read and delete only them: refusing them there would leave such an object
 * impossible to update, refresh or destroy. Only the new inputs meet the new rules.
 */
describe("stored state written before the interface-name rules", () => {
  const bridge = { connection, name: "br0", stp: false, ports: [], addresses: [], adopt: false, takeOverUplink: false, confirmTimeoutSec: 60, persistence: "runtime" };
  const vlan = { connection, parent: "eth1", vlanId: 10, name: "eth1.10", protocol: "802.1Q", addresses: [], adopt: false, persistence: "runtime" };
  const cases: [string, KindProvider, Record<string, unknown>, RegExp][] = [
    ["Bridge name .x", bridgeProvider, { ...bridge, name: ".x" }, /name: must not start with '\.'/],
    ["Bridge name x-port-y", bridgeProvider, { ...bridge, name: "x-port-y" }, /name: must not contain "-port-"/],
    ["Bridge port .eth1", bridgeProvider, { ...bridge, ports: [".eth1"] }, /ports\.0: must not start with '\.'/],
    ["VlanSubinterface name .v10", vlanSubinterfaceProvider, { ...vlan, name: ".v10" }, /name: must not start with '\.'/],
    ["NatNetwork bridgeName .kvn", natNetworkProvider, { ...nat, bridgeName: ".kvn" }, /bridgeName: must not start with '\.'/],
  ];
  it.each(cases)("%s is read; update refuses only the new inputs", async (_label, provider, stored, re) => {
    const err = await provider.update("id", stored, stored).then(
      () => undefined,
      (e: { kind: string; message: string }) => e,
    );
    expect(err?.kind).toBe("InvalidArgument");
    expect(err?.message).toMatch(/^InvalidArgument: invalid \w+: /);
    expect(err?.message).toMatch(re);
  });
});

/**
 * #14 item 7: a create whose result the engine never saw leaves a record
 * naming the id and a digest of the inputs; only the same inputs for the same
 * object count as that create's (the connection, which carries secrets, is
 * left out of the digest and never written to the host).
 */
describe("the creation record", () => {
  const inputs = { connection: { host: "kvm1.example.net", privateKey: "secret-key-material" }, name: "br0", stp: false, ports: ["eth1", "eth2"], addresses: [] };
  const record = (i: Record<string, unknown>) => creationRecord({ kind: "bridge" }, i as never, "kvm1.example.net/bridge/br0");

  it("lives under the state dir, names the id, and keeps no secret", () => {
    const r = record(inputs);
    expect(r.path).toBe("/run/kvmnet/state/created/bridge.br0");
    expect(JSON.parse(r.text)).toEqual({ id: "kvm1.example.net/bridge/br0", inputs: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(r.text).not.toContain("secret");
  });

  it("is the same for the same inputs in any key order and any credentials", () => {
    const { ports, ...rest } = inputs;
    expect(record({ ports, ...rest, connection: { host: "kvm1.example.net", password: "other" } })).toEqual(record(inputs));
  });

  it.each([[{ stp: true }], [{ ports: ["eth2", "eth1"] }], [{ mtu: 1400 }]])("differs when an input differs: %j", (patch) => {
    expect(record({ ...inputs, ...patch }).text).not.toBe(record(inputs).text);
  });
});

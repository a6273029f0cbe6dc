import { hostOf, KIND_NAMES, KindName, KINDS, parseResourceId, resourceId, sameHost, typeToken } from "../../provider/identity";
import { kinds } from "../../provider";
import { resolveConnection } from "../../provider/host";
import { forwardId } from "../../provider/resources/portForward/plan";
import { UNKNOWN } from "../../provider/validate";

describe("hostOf: the machine a connection reaches, as ids name it", () => {
  it.each([
    ["an SSH host", { host: "kvm1.example.net" }, "kvm1.example.net"],
    ["an ~/.ssh/config alias, as written", { host: "kvm1" }, "kvm1"],
    ["local: false", { host: "kvm1", local: false }, "kvm1"],
    ["local: true, whose host is only a label", { host: "anything", local: true }, "local"],
    ["no connection", undefined, undefined],
    ["no host", {}, undefined],
  ])("%s", (_label, connection, want) => {
    expect(hostOf(connection)).toBe(want);
  });

  it("a local flag not known yet (preview) is no known host, so the change shows as a move", () => {
    expect(sameHost({ host: "kvm1", local: true }, { host: "kvm1", local: UNKNOWN })).toBe(false);
    expect(sameHost({ host: "kvm1" }, { host: "kvm1", local: UNKNOWN })).toBe(false);
  });

  it("is the connection's label in messages", () => {
    expect(resolveConnection({ host: "lab-label", local: true }).label).toBe("local");
    expect(resolveConnection({ host: "127.0.0.1" }).label).toBe("127.0.0.1");
  });
});

/**
 * #17 item 3: five copies of hostOf disagreed about `local`. Bridge and
 * NatNetwork compared `host` only: relabelling a local connection replaced
 * them (a create-before-delete on the same machine, which then conflicts with
 * itself), and switching an SSH connection to `local: true` did not. Every kind
 * now asks the one hostOf, which the id is built from too.
 */
describe("every kind moves to another machine exactly when its id's host changes", () => {
  const inputs: Record<KindName, Record<string, unknown>> = {
    bridge: { name: "br0", ports: ["eth1"] },
    natNetwork: { name: "lab", bridgeName: "kvn-lab", subnet: "192.168.122.0/24", gateway: "192.168.122.1" },
    pciPassthrough: { address: "0000:65:00.0" },
    portForward: { protocol: "tcp", hostPort: 8080, destination: "10.0.0.5" },
    vlanSubinterface: { parent: "eth1", vlanId: 10, name: "eth1.10", protocol: "802.1Q" },
    tapInterface: { name: "tap0" },
  };
  const diff = (kind: KindName, from: object, to: object) => kinds[kind].diff("id", { ...inputs[kind], connection: from }, { ...inputs[kind], connection: to });

  it.each(KIND_NAMES)("%s: relabelling a local connection updates it in place", async (kind) => {
    expect(await diff(kind, { host: "old-label", local: true }, { host: "new-label", local: true })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });

  it.each(KIND_NAMES)("%s: an SSH host becoming local: true replaces it, creating first (another machine)", async (kind) => {
    expect(await diff(kind, { host: "kvm1" }, { host: "kvm1", local: true })).toEqual({ changes: true, replaces: ["connection"], deleteBeforeReplace: false });
  });

  it.each(KIND_NAMES)("%s: another SSH host replaces it", async (kind) => {
    expect(await diff(kind, { host: "kvm1" }, { host: "kvm2" })).toMatchObject({ replaces: ["connection"], deleteBeforeReplace: false });
  });
});

describe("the kind registry", () => {
  it("keeps the spellings already in users' state and on their hosts", () => {
    expect(Object.fromEntries(KIND_NAMES.map((k) => [k, [typeToken(k), resourceId(KINDS[k].idKind, { host: "h" }, "n")]]))).toEqual({
      bridge: ["pulumi-nodejs:dynamic/kvmnet:Bridge", "h/bridge/n"],
      natNetwork: ["pulumi-nodejs:dynamic/kvmnet:NatNetwork", "h/natNetwork/n"],
      pciPassthrough: ["pulumi-nodejs:dynamic/kvmnet:PciPassthrough", "h/pcipassthrough/n"],
      portForward: ["pulumi-nodejs:dynamic/kvmnet:PortForward", "h/portforward/n"],
      tapInterface: ["pulumi-nodejs:dynamic/kvmnet:TapInterface", "h/tapInterface/n"],
      vlanSubinterface: ["pulumi-nodejs:dynamic/kvmnet:VlanSubinterface", "h/vlanSubinterface/n"],
    });
  });

  it("has a provider object for every kind, and nothing else", () => {
    expect(Object.keys(kinds).sort()).toEqual([...KIND_NAMES].sort());
  });
});

describe("resource ids", () => {
  it("are `<host or local>/<idKind>/<name>`", () => {
    expect(resourceId("bridge", { host: "kvm1", local: true }, "br0")).toBe("local/bridge/br0");
    expect(forwardId({ connection: { host: "10.0.0.5" }, name: "tcp_any_8080" })).toBe("10.0.0.5/portforward/tcp_any_8080");
  });

  it.each([
    ["kvm1.example.net/bridge/br0", { host: "kvm1.example.net", kind: "bridge", name: "br0" }],
    ["local/natNetwork/lab", { host: "local", kind: "natNetwork", name: "lab" }],
    ["127.0.0.1/pcipassthrough/0000:65:00.0", { host: "127.0.0.1", kind: "pciPassthrough", name: "0000:65:00.0" }],
    ["127.0.0.1/pciPassthrough/0000:65:00.0", { host: "127.0.0.1", kind: "pciPassthrough", name: "0000:65:00.0" }],
    ["fd00::1/portforward/tcp_any_8080", { host: "fd00::1", kind: "portForward", name: "tcp_any_8080" }],
    ["kvm1/portForward/udp_198_19_0_11_5000_5010", { host: "kvm1", kind: "portForward", name: "udp_198_19_0_11_5000_5010" }],
    ["kvm1/vlanSubinterface/eth1.10", { host: "kvm1", kind: "vlanSubinterface", name: "eth1.10" }],
  ])("%s parses, in either spelling of its kind", (id, want) => {
    expect(parseResourceId(id)).toEqual(want);
  });

  it.each(["", "kvm1/bridge", "kvm1/router/r1", "/bridge/br0", "kvm1//br0"])("%j is not one of ours", (id) => {
    expect(parseResourceId(id)).toBeUndefined();
  });

  it.each(KIND_NAMES)("%s: parse(build(x)) is x", (kind) => {
    expect(parseResourceId(resourceId(KINDS[kind].idKind, { host: "kvm1" }, "some.name"))).toEqual({ host: "kvm1", kind, name: "some.name" });
  });
});

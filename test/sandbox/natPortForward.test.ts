/**
 * A NatNetwork and a PortForward into it, created at the same moment (as the
 * engine does for resources that only share an address), in each mode and in
 * both orders, proven from outside: a client in the upstream namespace reaches
 * a guest that got its address from the network's DHCP. What each mode does
 * with forwarded traffic (README, NatNetwork):
 * - nat, route: the forward works; the network holds ip_forward on;
 * - isolated: the forward is the one way in (guests still reach nothing
 *   outside), its connections arriving from the gateway address (the guests
 *   have no route out); ip_forward is the host's (on here, as on most KVM hosts);
 * - open: no rules of ours; the forward works where ip_forward is on.
 */
import { closeAllConnections } from "../../provider/host";
import { natNetworkProvider } from "../../provider/resources/natNetwork";
import { portForwardProvider } from "../../provider/resources/portForward";
import { checkedInputs, sandboxConnection } from "../support/drive";
import { dhcpLease, Listeners, talk } from "../../testbed/guests";
import { assertSandboxSupported, Fleet, SandboxHost, snapshotHost, startFleet } from "../../testbed/fleet";

let fleet: Fleet;
let h: SandboxHost;
let guest: Awaited<ReturnType<Fleet["addGuest"]>>;
const listeners = new Listeners();

beforeAll(async () => {
  await assertSandboxSupported();
  fleet = await startFleet(1);
  [h] = fleet.hosts;
  guest = await fleet.addGuest(h, "vnet0");
  await guest.exec("ip link set dev eth0 address 52:54:00:7b:00:10");
  await listeners.serve(fleet.upstream.exec, "TCP-LISTEN:7000");
});

afterAll(async () => {
  await listeners.stopAll();
  closeAllConnections();
  await fleet?.stop();
});

const checked = (p: typeof natNetworkProvider, props: Record<string, unknown>) => checkedInputs(p, { connection: sandboxConnection(h), ...props });

describe.each([
  ["nat", "network first", false],
  ["route", "forward first", false],
  ["isolated", "forward first", true],
  ["open", "network first", true],
] as const)("mode %s, created at once (%s)", (mode, order, hostForwards) => {
  it("lets an outside client reach the guest through the forward, and both deletes leave the host as it was", async () => {
    if (hostForwards) await h.exec("sysctl -qw net.ipv4.ip_forward=1");
    const before = await snapshotHost(h);
    const net = await checked(natNetworkProvider, {
      name: "fw",
      bridgeName: "virbr1",
      mode,
      subnet: "192.168.123.0/24",
      dhcp: { start: "192.168.123.100", end: "192.168.123.200", hosts: [{ mac: "52:54:00:7b:00:10", ip: "192.168.123.10" }] },
    });
    const fwd = await checked(portForwardProvider, { protocol: "tcp", hostPort: 8022, destination: "192.168.123.10", destinationPort: 22 });
    // Both start before either finishes; the first call is the first to observe the host.
    const startNet = () => natNetworkProvider.create(net);
    const startFwd = () => portForwardProvider.create(fwd);
    const [n, f] = order === "network first" ? await Promise.all([startNet(), startFwd()]) : await Promise.all([startFwd(), startNet()]).then(([x, y]) => [y, x] as const);
    try {
      await h.exec("ip link set dev vnet0 master virbr1");
      expect(await dhcpLease(guest.exec)).toBe("192.168.123.10");
      await listeners.serve(guest.exec, "TCP-LISTEN:22");
      // The guest sees the client's own address, except in isolated mode (no route out: the gateway's).
      const peer = mode === "isolated" ? "192.168.123.1" : fleet.upstream.address;
      expect(await talk(fleet.upstream.exec, "tcp", `${h.uplinkAddress}:8022`, `via-${mode}`)).toBe(`peer=${peer}\nvia-${mode}\n`);
      // What the guest starts itself: masqueraded out (nat), refused (isolated). Route
      // and open send it unchanged, and upstream has no route back to the subnet.
      if (mode === "nat") expect(await talk(guest.exec, "tcp", `${fleet.upstream.address}:7000`, "out")).toBe(`peer=${h.uplinkAddress}\nout\n`);
      if (mode === "isolated") expect(await talk(guest.exec, "tcp", `${fleet.upstream.address}:7000`, "out")).toBe("");
      // Reading either back finds nothing changed by the other.
      expect((await natNetworkProvider.read(n.id, n.outs)).props).toEqual(n.outs);
      expect((await portForwardProvider.read(f.id, f.outs)).props).toEqual(f.outs);
    } finally {
      await listeners.stopAll();
      await listeners.serve(fleet.upstream.exec, "TCP-LISTEN:7000");
      await Promise.all([natNetworkProvider.delete(n.id, n.outs), portForwardProvider.delete(f.id, f.outs)]);
      await h.exec("ip link set dev vnet0 nomaster 2>/dev/null; ip -4 addr flush dev vnet0; true");
      await guest.exec("ip -4 addr flush dev eth0; ip route flush dev eth0; true");
    }
    expect(await snapshotHost(h)).toEqual(before);
    if (hostForwards) await h.exec("sysctl -qw net.ipv4.ip_forward=0");
  });
});

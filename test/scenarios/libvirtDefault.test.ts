/**
 * Scenario: libvirt's default network, natively (examples/libvirt-default),
 * under the real engine against a sandbox host, judged from OUTSIDE the host.
 *
 * One program: NatNetwork "default" (virbr0, 192.168.122.0/24, a static lease
 * for the web guest's MAC) and two PortForwards (tcp 8443 → web:443, udp 5353
 * → web:53) that only share an address with the network: no dependsOn, so the
 * engine creates all three at once. A guest namespace plugged into virbr0 (as a
 * hypervisor plugs a VM's tap) gets its lease by DHCP; a client in the upstream
 * namespace reaches it through the host's uplink address. Then an in-place
 * update (a second static host and a forward to it) while a TCP connection
 * through the first forward stays open, and destroy leaves the host as it was.
 */
import * as path from "path";
import { Fleet, SandboxHost, snapshotHost } from "../../testbed/fleet";
import { REPO, Stack } from "../../testbed/engine";
import { exampleOnSandboxHost } from "../support/drive";
import { dhcpLease, heldConnection, Listeners, talk } from "../../testbed/guests";
import { hostProcesses } from "./support";

jest.setTimeout(900_000);

const NAT = "pulumi-nodejs:dynamic/kvmnet:NatNetwork";
const PF = "pulumi-nodejs:dynamic/kvmnet:PortForward";

let fleet: Fleet;
let h: SandboxHost;
let stack: Stack;
const listeners = new Listeners();

exampleOnSandboxHost(
  {
    project: path.join(REPO, "examples", "libvirt-default"),
    stackName: "scenario-libvirt-default",
    // Sandbox hosts have no libvirtd (test/lab/libvirt.engine.test.ts runs the registration).
    config: { libvirt: "false" },
    teardown: () => listeners.stopAll(),
  },
  (host, s, f) => {
    h = host;
    stack = s;
    fleet = f;
  },
);

it("serves a guest on the default network through two forwards, keeps traffic across an update, and destroys to the baseline", async () => {
  const web = await fleet.addGuest(h, "vnet0");
  const db = await fleet.addGuest(h, "vnet1");
  await web.exec("ip link set dev eth0 address 52:54:00:7a:00:10");
  await db.exec("ip link set dev eth0 address 52:54:00:7a:00:20");
  const before = await snapshotHost(h);
  const processesBefore = await hostProcesses(h);

  // All three resources at once (the program has no dependsOn).
  await stack.ok(["up", "--yes"]);
  // The hypervisor's part: plug the guests' NICs into the bridge.
  await h.exec("ip link set dev vnet0 master virbr0 && ip link set dev vnet1 master virbr0");

  expect(await dhcpLease(web.exec)).toBe("192.168.122.10");
  await listeners.serve(web.exec, "TCP-LISTEN:443");
  await listeners.serve(web.exec, "UDP-RECVFROM:53");
  // From outside: the client sees its own address at the guest (no masquerade inbound).
  const up = fleet.upstream;
  expect(await talk(up.exec, "tcp", `${h.uplinkAddress}:8443`, "hello-tcp")).toBe(`peer=${up.address}\nhello-tcp\n`);
  expect(await talk(up.exec, "udp", `${h.uplinkAddress}:5353`, "hello-udp")).toContain("hello-udp");
  // The guest reaches upstream, masqueraded behind the host's uplink address.
  await listeners.serve(up.exec, "TCP-LISTEN:7000");
  expect(await talk(web.exec, "tcp", `${up.address}:7000`, "out")).toBe(`peer=${h.uplinkAddress}\nout\n`);

  await stack.ok(["preview", "--expect-no-changes"]);
  await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

  // In-place update: a second static host (dnsmasq reloads, no restart) and a forward to it.
  const held = await heldConnection(up.exec, h.uplinkAddress, 8443);
  expect(await held.first()).toBe(`peer=${up.address}\nbefore\n`);
  const dnsmasqPid = (await h.exec("cat /run/kvmnet/nat/default/dnsmasq.pid")).stdout.trim();
  await stack.setConfig("db", "true");
  const steps = (await stack.previewSteps()).filter((s) => s.op !== "same");
  expect(steps.map((s) => [s.op, s.type, s.name]).sort()).toEqual([
    ["create", PF, "db-pg"],
    ["update", NAT, "default"],
  ]);
  await stack.ok(["up", "--yes"]);
  expect(await held.second()).toBe("after\n");
  await held.close();
  expect((await h.exec("cat /run/kvmnet/nat/default/dnsmasq.pid")).stdout.trim()).toBe(dnsmasqPid);
  expect(await dhcpLease(db.exec)).toBe("192.168.122.20");
  await listeners.serve(db.exec, "TCP-LISTEN:5432");
  expect(await talk(up.exec, "tcp", `${h.uplinkAddress}:15432`, "pg")).toBe(`peer=${up.address}\npg\n`);
  expect(await talk(up.exec, "tcp", `${h.uplinkAddress}:8443`, "still")).toBe(`peer=${up.address}\nstill\n`);
  // Hairpin: the db guest reaches the web guest through the host's public address and port.
  expect(await talk(db.exec, "tcp", `${h.uplinkAddress}:8443`, "hairpin")).toBe("peer=192.168.122.1\nhairpin\n");

  await stack.ok(["preview", "--expect-no-changes"]);
  await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

  await stack.ok(["destroy", "--yes"]);
  await listeners.stopAll();
  await h.exec("ip link set dev vnet0 nomaster 2>/dev/null; ip link set dev vnet1 nomaster 2>/dev/null; true");
  expect(await snapshotHost(h)).toEqual(before);
  expect(await hostProcesses(h)).toEqual(processesBefore);
  expect(await talk(up.exec, "tcp", `${h.uplinkAddress}:8443`, "gone")).toBe("");
});

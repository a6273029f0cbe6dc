/**
 * Scenario: a bridged host with a guest VLAN (examples/bridged-vlan) under the
 * real engine, on the lab host (tier 3: this machine's kernel has no 802.1Q).
 * The guest's LAN NIC is its uplink (address 192.0.2.2/24 and the default
 * route; the tap's other end is in this test's namespace, 192.0.2.1). One `up`
 * moves the uplink into br0 under commit-confirm, puts VLAN 10 of br0 into
 * br-vlan10, and a guest (a namespace in the lab host, its veth plugged into
 * br-vlan10 as a hypervisor plugs a tap) is reached from OUTSIDE: the tagged
 * peer on the LAN sends VLAN-10 frames and gets the guest's echo replies,
 * tagged 10; untagged traffic still reaches the host's address on br0.
 * destroy gives the uplink its address and route back: the host's snapshot
 * equals the one before.
 */
import { execFileSync } from "child_process";
import * as path from "path";
import { ensurePulumi, REPO, Stack } from "../../testbed/engine";
import { bootLabHost, checkLabSupport, LabHost } from "../../testbed/labHost";
import { labSnapshot } from "../lab/labSnapshot";
import { runTaggedPeer } from "../lab/taggedPeer";

jest.setTimeout(30 * 60_000);

const ns = `kvl-sc${process.pid}`;
const root = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: "utf8" });
let lab: LabHost;
let stack: Stack;
let lanIf: string;
let tap: string;

beforeAll(async () => {
  checkLabSupport();
  root("python3", ["-c", "import socket; socket.AF_PACKET"]); // the tagged peer's interpreter: fail loudly, never skip
  const bin = await ensurePulumi();
  root("ip", ["netns", "add", ns]);
  lab = await bootLabHost({ extraNics: false, lan: { netns: ns } });
  tap = lab.lan!.tap;
  const links = JSON.parse((await lab.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
  lanIf = links.find((l) => l.address === lab.macs.lan)!.ifname;
  // The host's uplink: the LAN NIC with an address and the default route (SSH stays on eth0's own subnet).
  await lab.exec(`ip link set dev ${lanIf} up && ip addr add 192.0.2.2/24 dev ${lanIf} && ip route replace default via 192.0.2.1 dev ${lanIf}`);
  root("ip", ["-n", ns, "addr", "add", "192.0.2.1/24", "dev", tap]);
  // The hypervisor's part, made before the program runs: a guest whose NIC's host end waits to be plugged in.
  await lab.exec(
    "ip netns add g10 && ip link add vg10 type veth peer name eth0 netns g10 && ip -n g10 addr add 198.51.100.2/24 dev eth0 && ip -n g10 link set eth0 up && ip -n g10 link set lo up",
  );
  stack = new Stack(path.join(REPO, "examples", "bridged-vlan"), `scenario-bridged-vlan-${process.pid}`, bin);
  await stack.init();
  await stack.connectTo(lab);
  await stack.setConfig("uplink", lanIf);
});

afterAll(async () => {
  await stack?.pulumi(["destroy", "--yes"]);
  await stack?.dispose();
  await lab?.shutdown();
  try {
    root("ip", ["netns", "del", ns]);
  } catch {
    /* never made */
  }
});

/** Untagged: the LAN reaches the host's address (wherever it lives on the host). */
const lanPing = () => {
  try {
    root("ip", ["netns", "exec", ns, "ping", "-c", "1", "-W", "3", "192.0.2.2"]);
    return true;
  } catch {
    return false;
  }
};

it("moves the uplink into br0, bridges VLAN 10 of it for a guest reached from the LAN, and destroys to the baseline", async () => {
  expect(lanPing()).toBe(true);
  const before = await labSnapshot(lab);

  const up = await stack.ok(["up", "--yes"]);
  expect(up.stdout).toMatch(/br0\s+created/);
  const defaultDev = JSON.parse((await lab.exec("ip -j -4 route show default")).stdout)[0]?.dev;
  expect(defaultDev).toBe("br0");
  expect(lanPing()).toBe(true);

  // The hypervisor plugs the guest in; the LAN's tagged peer reaches it on VLAN 10.
  await lab.exec("ip link set dev vg10 master br-vlan10 && ip link set dev vg10 up");
  const peer = await runTaggedPeer(ns, tap, 10, "8100", "198.51.100.1", "198.51.100.2", 3);
  expect(peer.arpReply?.vlan).toBe(10);
  expect(peer.echoReplies).toEqual([
    { tpid: "0x8100", vlan: 10 },
    { tpid: "0x8100", vlan: 10 },
    { tpid: "0x8100", vlan: 10 },
  ]);

  await stack.ok(["preview", "--expect-no-changes"]);
  await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

  await stack.ok(["destroy", "--yes"]);
  await lab.exec("ip link set dev vg10 nomaster; ip link set dev vg10 down");
  expect(lanPing()).toBe(true);
  expect(await labSnapshot(lab)).toEqual(before);
});

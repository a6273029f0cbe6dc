/**
 * Scenario: a Bridge and a TapInterface on it (examples/tap-guest) under the
 * real engine, on a sandbox host whose unprivileged user stands for QEMU.
 * That user opens the tap the way QEMU does (TUNSETIFF with the flags the
 * tap was made with, see testbed/tapOpen.ts) and writes Ethernet frames;
 * a guest on the same bridge receives them — judged in the guest's own
 * namespace, outside the host. Then destroy leaves the host as it was.
 */
import * as path from "path";
import { Fleet, SandboxHost, snapshotHost } from "../../testbed/fleet";
import { REPO, Stack } from "../../testbed/engine";
import { exampleOnSandboxHost } from "../support/drive";
import { frameWaitCommand, tapWriteCommand } from "../../testbed/tapOpen";

jest.setTimeout(300_000);

let fleet: Fleet;
let h: SandboxHost;
let stack: Stack;

exampleOnSandboxHost(
  {
    project: path.join(REPO, "examples", "tap-guest"),
    stackName: "scenario-tap-guest",
    config: { owner: "kvmqemu" },
    // The host's private /etc gets the QEMU user; /dev/net/tun is 0600 on this machine, 0666
    // on a KVM host (udev), so the host's own mount namespace gets such a node.
    setup: (host) =>
      host.exec("useradd -M -U -s /usr/sbin/nologin kvmqemu && mount -t tmpfs -o mode=0755 kvs-tun /dev/net && mknod -m 0666 /dev/net/tun c 10 200").then(() => undefined),
  },
  (host, s, f) => {
    h = host;
    stack = s;
    fleet = f;
  },
);

it("frames the unprivileged owner writes into the tap reach a guest on the bridge; destroy leaves no trace", async () => {
  const guest = await fleet.addGuest(h, "vnet0");
  const baseline = await snapshotHost(h);

  await stack.ok(["up", "--yes"]);
  await stack.ok(["preview", "--expect-no-changes"]);
  const args = JSON.parse((await stack.ok(["stack", "output", "qemuNetdevArgs", "--json"])).stdout) as string[];
  expect(args).toEqual([
    "-netdev",
    "tap,id=net-tap-vm1,ifname=tap-vm1,script=no,downscript=no,vnet_hdr=on",
    "-device",
    expect.stringMatching(/^virtio-net-pci,netdev=net-tap-vm1,mac=52:54:00:/),
  ]);

  // The guest's veth end stands for another VM's NIC on the same bridge.
  await h.exec("ip link set dev vnet0 master br-guests");
  const received = guest.exec(frameWaitCommand("eth0", "from-vm1", 15), { allowFail: true });
  const written = await h.exec(tapWriteCommand({ user: "kvmqemu", ifname: "tap-vm1", payload: "from-vm1", vnetHdr: true, repeat: 30 }));
  expect(written.stdout).toContain("written");
  expect((await received).stdout).toContain("received");

  await stack.ok(["destroy", "--yes"]);
  await h.exec("ip link set dev vnet0 nomaster");
  expect(await snapshotHost(h)).toEqual(baseline);
});

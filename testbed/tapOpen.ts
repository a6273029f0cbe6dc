/**
 * What an unprivileged QEMU does with a tap, in a few lines of python3: open
 * /dev/net/tun, TUNSETIFF the tap by name (IFF_TAP | IFF_NO_PI, plus
 * IFF_VNET_HDR / IFF_MULTI_QUEUE as the tap was made), and write one Ethernet
 * frame. The kernel lets a non-root process attach only when it is the tap's
 * owner or in its group (tun.c tun_not_capable), so success proves the
 * owner/group the resource set. The system python (/usr/bin/python3), since a
 * pyenv shim under /root is closed to other users.
 */

/** EtherType of the test frames: 0x88b5, IEEE's "local experimental" type, which no stack on the way answers. */
export const TEST_ETHERTYPE = 0x88b5;

/**
 * A shell command that, run as `user` (setpriv, with that user's groups),
 * opens tap `ifname` and writes a broadcast frame carrying `payload` (`repeat`
 * times, 0.1 s apart, for a receiver that may start listening late). Exits 0
 * when the frame was written; prints the errno name otherwise.
 * Every argument is a name from the test itself (no quoting needed beyond argv).
 */
export function tapWriteCommand(o: { user: string; ifname: string; payload: string; vnetHdr?: boolean; multiQueue?: boolean; repeat?: number }): string {
  const py = [
    "import fcntl, os, struct, sys",
    "ifname, payload, vnet, mq = sys.argv[1], sys.argv[2].encode(), sys.argv[3] == '1', sys.argv[4] == '1'",
    "IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE, TUNSETIFF = 0x0002, 0x1000, 0x4000, 0x0100, 0x400454ca",
    "flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0) | (IFF_MULTI_QUEUE if mq else 0)",
    "try:",
    "    fd = os.open('/dev/net/tun', os.O_RDWR)",
    "    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', ifname.encode(), flags))",
    "except OSError as e:",
    "    print('open failed:', os.strerror(e.errno)); sys.exit(1)",
    // A virtio_net_hdr (10 bytes, no offloads) precedes the frame when IFF_VNET_HDR is set.
    `frame = (bytes(10) if vnet else b'') + b'\\xff' * 6 + bytes.fromhex('525400aabbcc') + struct.pack('!H', ${TEST_ETHERTYPE}) + payload.ljust(46, b'.')`,
    "import time",
    "for i in range(int(sys.argv[5])):",
    "    os.write(fd, frame)",
    "    time.sleep(0.1)",
    "print('written')",
  ].join("\n");
  const args = [o.ifname, o.payload, o.vnetHdr ? "1" : "0", o.multiQueue ? "1" : "0", String(o.repeat ?? 1)].map((a) => `'${a}'`).join(" ");
  return `setpriv --reuid=${o.user} --regid=${o.user} --init-groups /usr/bin/python3 -c '${py.replace(/'/g, "'\\''")}' ${args}`;
}

/**
 * A shell command that waits up to `seconds` on interface `ifname` for a
 * frame of {@link TEST_ETHERTYPE} carrying `payload`, and prints "received"
 * (exit 0) or "timeout" (exit 1). Run it in the namespace of the receiver.
 */
export function frameWaitCommand(ifname: string, payload: string, seconds: number): string {
  const py = [
    "import socket, sys, time",
    "ifname, payload, deadline = sys.argv[1], sys.argv[2].encode(), time.time() + float(sys.argv[3])",
    `s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(${TEST_ETHERTYPE}))`,
    "s.bind((ifname, 0))",
    "print('listening', flush=True)",
    "while time.time() < deadline:",
    "    s.settimeout(max(0.1, deadline - time.time()))",
    "    try:",
    "        f = s.recv(2048)",
    "    except socket.timeout:",
    "        break",
    "    if payload in f:",
    "        print('received'); sys.exit(0)",
    "print('timeout'); sys.exit(1)",
  ].join("\n");
  return `/usr/bin/python3 -c '${py.replace(/'/g, "'\\''")}' '${ifname}' '${payload}' ${seconds}`;
}

/**
 * The raw-socket 802.1Q/802.1ad peer of the VLAN lab tests: this machine's kernel
 * has no 802.1Q, so a python3 AF_PACKET program in the test's namespace plays
 * the tagged end of the guest's LAN tap.
 */
import { spawn } from "child_process";

/**
 * The tagged peer: from `myIp` on the tap, sends a tagged ARP request for
 * `peerIp`, then tagged ICMP echo requests to the MAC that answered, until
 * `count` tagged echo replies came back. Prints what it saw as JSON: the tag
 * of the ARP reply and of each echo reply (from the frame, or from the kernel's
 * PACKET_AUXDATA when the tag was taken off on receive).
 */
const PEER = String.raw`
import json, select, socket, struct, sys, time
ifname, vid, tpid, my_ip, peer_ip, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 16), sys.argv[4], sys.argv[5], int(sys.argv[6])
SOL_PACKET, PACKET_AUXDATA, VLAN_VALID, TPID_VALID, OUTGOING = 263, 8, 0x10, 0x40, 4
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((ifname, 0))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
me = s.getsockname()[4]
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def frame(dst, ethertype, payload):
    return dst + me + struct.pack("!HHH", tpid, vid, ethertype) + payload
def arp_request():
    return frame(b"\xff" * 6, 0x0806, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, me, socket.inet_aton(my_ip), b"\0" * 6, socket.inet_aton(peer_ip)))
def echo_request(dst, seq):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x6b76, seq) + b"kvmnet-vlan-peer"
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, socket.inet_aton(my_ip), socket.inet_aton(peer_ip))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return frame(dst, 0x0800, ip + icmp)
def receive(timeout):
    if not select.select([s], [], [], timeout)[0]: return None
    data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(32))
    if addr[2] == OUTGOING or len(data) < 14: return None
    et = struct.unpack("!H", data[12:14])[0]
    if et in (0x8100, 0x88a8) and len(data) >= 18:
        tci, inner = struct.unpack("!HH", data[14:18])
        return data[6:12], ("0x%04x" % et, tci & 0xfff), inner, data[18:]
    tag = None
    for level, kind, value in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _, _, _, _, tci, t = struct.unpack("IIIHHHH", value[:20])
            if status & VLAN_VALID: tag = ("0x%04x" % (t if status & TPID_VALID else 0x8100), tci & 0xfff)
    return data[6:12], tag, et, data[14:]
out = {"arpReply": None, "echoReplies": [], "untagged": 0}
peer, seq, resend, deadline = None, 0, 0.0, time.time() + 30
while time.time() < deadline and len(out["echoReplies"]) < count:
    if time.time() >= resend:
        if peer is None: s.send(arp_request())
        else: seq += 1; s.send(echo_request(peer, seq))
        resend = time.time() + 1
    got = receive(0.2)
    if got is None: continue
    src, tag, et, body = got
    if et == 0x0806 and len(body) >= 28 and body[7] == 2 and socket.inet_ntoa(body[14:18]) == peer_ip:
        if tag is None: out["untagged"] += 1; continue
        out["arpReply"] = {"tpid": tag[0], "vlan": tag[1], "mac": src.hex(":")}
        peer, resend = src, 0.0
    elif et == 0x0800 and peer is not None and len(body) >= 28 and body[9] == 1 and socket.inet_ntoa(body[12:16]) == peer_ip:
        ihl = (body[0] & 15) * 4
        if body[ihl] != 0: continue
        if tag is None: out["untagged"] += 1; continue
        out["echoReplies"].append({"tpid": tag[0], "vlan": tag[1]})
        resend = 0.0
print(json.dumps(out))
`;

export interface PeerResult {
  arpReply: { tpid: string; vlan: number; mac: string } | null;
  echoReplies: { tpid: string; vlan: number }[];
  untagged: number;
}

/** Run the peer on `tap` in namespace `ns` (tpid in hex, e.g. "8100"). */
export function runTaggedPeer(ns: string, tap: string, vid: number, tpid: string, myIp: string, peerIp: string, count: number): Promise<PeerResult> {
  return new Promise((resolve, reject) => {
    const p = spawn("ip", ["netns", "exec", ns, "python3", "-c", PEER, tap, String(vid), tpid, myIp, peerIp, String(count)], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    p.on("close", (code) => (code === 0 ? resolve(JSON.parse(out) as PeerResult) : reject(new Error(`tagged peer exited ${code}: ${err}`))));
  });
}

/** The tagged peer's result reduced to what a test compares: tags of the ARP reply and echo replies, untagged answers. */
export function taggedSummary(r: PeerResult) {
  return { arp: r.arpReply && { tpid: r.arpReply.tpid, vlan: r.arpReply.vlan }, echo: r.echoReplies, untagged: r.untagged };
}

/** What {@link taggedSummary} is when `count` echo replies came back tagged `vid`/`tpid` and nothing untagged. */
export function taggedOk(vid: number, tpid: "8100" | "88a8", count = 2) {
  const tag = { tpid: `0x${tpid}`, vlan: vid };
  return { arp: tag, echo: Array.from({ length: count }, () => tag), untagged: 0 };
}

/**
 * Two hosts that share a kernel (sandbox hosts; on real hosts: containers or
 * other network namespaces) each run a NatNetwork of the same name. /proc
 * shows every namespace's processes, so anything that finds "our" dnsmasq by
 * its command line must keep to its own namespace: creating the second must
 * not see the first's dnsmasq as a leftover, and deleting one must not stop
 * the other's.
 */
import { closeAllConnections } from "../../provider/host";
import { natNetworkProvider as p } from "../../provider/resources/natNetwork";
import { checkedInputs, sandboxConnection } from "../support/drive";
import { assertSandboxSupported, Fleet, snapshotHost, startFleet } from "../../testbed/fleet";

let fleet: Fleet;

beforeAll(async () => {
  await assertSandboxSupported();
  fleet = await startFleet(2);
});

afterAll(async () => {
  closeAllConnections();
  await fleet?.stop();
});

it("keeps each host's dnsmasq to its own network namespace", async () => {
  const [a, b] = fleet.hosts;
  const before = await snapshotHost(a);
  const create = async (h: typeof a) => {
    return p.create(await checkedInputs(p, { connection: sandboxConnection(h), name: "same", subnet: "10.88.0.0/24", dhcp: { start: "10.88.0.10", end: "10.88.0.20" } }));
  };
  const na = await create(a);
  const nb = await create(b);
  const pidB = nb.outs.dnsmasqPid;
  expect(pidB).toEqual(expect.any(Number));
  await p.delete(na.id, na.outs);
  expect(await snapshotHost(a)).toEqual(before);
  // b's dnsmasq is the same live process, and b reads back unchanged.
  expect((await b.exec(`cat /proc/${String(pidB)}/comm`)).stdout.trim()).toBe("dnsmasq");
  expect((await p.read(nb.id, nb.outs)).props).toEqual(nb.outs);
  await p.delete(nb.id, nb.outs);
});

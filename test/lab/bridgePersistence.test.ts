/**
 * A Bridge survives a real reboot through each network stack the lab guest can
 * run: ifupdown, systemd-networkd, NetworkManager (switched per run by
 * test/lab/stacks.ts, which reboots into the chosen stack).
 *
 * Per stack: create a bridge with the guest's LAN NIC as port and an address,
 * persistence "auto" → `persistedBy` names the stack; reboot; the bridge is
 * back (same MAC, address, port) and answers a ping from the test's namespace
 * (the LAN tap's far end); read shows no drift; a hand edit of the persisted
 * file is drift and an update repairs it; delete removes every file; after
 * another reboot nothing of ours is on the guest.
 */
import { execFileSync } from "child_process";
import { bridgeProvider } from "../../provider/resources/bridge";
import { bootLabHost, LabHost } from "./labHost";
import { releaseLab, waitFor } from "./persistSupport";
import { labStacks, useNetworkStack } from "./stacks";

jest.setTimeout(40 * 60_000);

const ns = `kvbp${process.pid}`;
let lab: LabHost;
let lanIf: string;

const root = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();

beforeAll(async () => {
  root("ip", ["netns", "add", ns]);
  lab = await bootLabHost({ lan: { netns: ns }, extraNics: false });
  const links = JSON.parse((await lab.exec("ip -j link show")).stdout) as { ifname: string; address: string }[];
  lanIf = links.find((l) => l.address === lab.macs.lan)!.ifname;
  root("ip", ["-n", ns, "addr", "add", "192.0.2.2/24", "dev", lab.lan!.tap]);
});

afterAll(async () => {
  await releaseLab(lab, ns);
});

const conn = () => ({ host: "127.0.0.1", port: lab.port, user: "root", privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint });

/** Every file of ours a stack could read at boot, and our manifests. */
const OURS = "ls -1d /etc/systemd/network/*kvmnet* /etc/NetworkManager/system-connections/*kvmnet* /etc/network/interfaces.d/*kvmnet* /etc/kvmnet 2>/dev/null; true";

const pingFromLan = () => {
  try {
    root("ip", ["netns", "exec", ns, "ping", "-c", "2", "-W", "2", "192.0.2.1"]);
    return true;
  } catch {
    return false;
  }
};

async function bridgeState(name: string) {
  const link = JSON.parse((await lab.exec(`ip -j -d link show dev ${name} 2>/dev/null || echo '[]'`)).stdout)[0] as
    { address?: string; linkinfo?: { info_kind?: string } } | undefined;
  const addrs = (
    (JSON.parse((await lab.exec(`ip -j addr show dev ${name} 2>/dev/null || echo '[]'`)).stdout)[0]?.addr_info ?? []) as { family: string; local: string; prefixlen: number }[]
  )
    .filter((a) => a.family === "inet")
    .map((a) => `${a.local}/${a.prefixlen}`);
  const master = JSON.parse((await lab.exec(`ip -j link show dev ${lanIf}`)).stdout)[0]?.master as string | undefined;
  return { kind: link?.linkinfo?.info_kind, mac: link?.address, addrs, portOf: master };
}

// CI: NetworkManager (NM taking up a live bridge it did not make is the likeliest to break);
// KVMNET_LAB_STACK=all for every stack (all three passed; see the README).
describe.each(labStacks(["networkmanager"]))("Bridge persisted through %s", (stack) => {
  it("comes back after a reboot without drift; edits are drift and repaired; delete leaves nothing, also after a reboot", async () => {
    await useNetworkStack(lab, stack);
    expect((await lab.exec(OURS)).stdout.trim()).toBe("");
    const name = "br-keep";
    const props = { connection: conn(), name, ports: [lanIf], addresses: ["192.0.2.1/24"], persistence: "auto" };
    const checked = await bridgeProvider.check({}, props);
    expect(checked.failures ?? []).toEqual([]);
    const c = await bridgeProvider.create(checked.inputs);
    expect(c.outs).toMatchObject({ persistedBy: stack, persistenceDrift: [], ports: [lanIf], addresses: ["192.0.2.1/24"] });
    const live = await bridgeState(name);
    expect(live).toMatchObject({ kind: "bridge", addrs: ["192.0.2.1/24"], portOf: name });
    expect(pingFromLan()).toBe(true);

    const boot = await lab.reboot();
    console.log(`${stack}: reboot ${boot.ms} ms`);
    // SSH answers over eth0; the stack may bring the bridge up a moment later: poll, bounded.
    const backMs = await waitFor(`${name} back`, 60_000, async () => JSON.stringify(await bridgeState(name)) === JSON.stringify(live)).catch(() => -1);
    console.log(`${stack}: bridge back ${backMs} ms after SSH`);
    expect(await bridgeState(name)).toEqual(live);
    expect(pingFromLan()).toBe(true);
    const read = await bridgeProvider.read(c.id, c.outs);
    expect(read.props).toMatchObject({ persistedBy: stack, persistenceDrift: [], macAddress: live.mac, ports: [lanIf], addresses: ["192.0.2.1/24"] });
    expect(read.inputs).toEqual(Object.fromEntries(Object.keys(read.inputs ?? {}).map((k) => [k, c.outs[k]])));

    // A hand edit of the persisted config is drift; the next update puts it back.
    const files = (await lab.exec(`cat /etc/kvmnet/owned/bridge/${name}`)).stdout.trim().split("\n");
    expect(files.length).toBeGreaterThan(0);
    await lab.exec(`echo '# edited by hand' >> ${files[0]}`);
    const drifted = await bridgeProvider.read(c.id, c.outs);
    expect(drifted.props.persistenceDrift).toEqual([`${files[0]} differs from what the inputs render`]);
    expect(drifted.inputs?.persistence).toBe("runtime");
    const diff = await bridgeProvider.diff(c.id, drifted.props, checked.inputs);
    expect(diff).toMatchObject({ changes: true, replaces: [] });
    const repaired = await bridgeProvider.update(c.id, drifted.props, checked.inputs);
    expect(repaired.outs).toMatchObject({ persistedBy: stack, persistenceDrift: [] });
    expect((await lab.exec(`grep -c 'edited by hand' ${files[0]} || true`)).stdout.trim()).toBe("0");
    expect(await bridgeState(name)).toEqual(live);

    await bridgeProvider.delete(c.id, repaired.outs);
    expect((await lab.exec(OURS)).stdout.trim()).toBe("");
    expect((await bridgeState(name)).kind).toBeUndefined();
    await lab.reboot();
    expect((await bridgeState(name)).kind).toBeUndefined();
    expect((await lab.exec(OURS)).stdout.trim()).toBe("");
    expect(pingFromLan()).toBe(false);
  });
});

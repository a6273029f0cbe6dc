/**
 * NatNetwork on a host where systemd runs (the lab guest): dnsmasq is the unit
 * kvmnet-dnsmasq-<name>.service, proven with real DHCP and DNS traffic.
 *
 * The guest's LAN NIC is enslaved to the network's bridge by hand, exactly as a
 * VM's tap would be; its other end is a tap in a namespace this test owns, where
 * busybox udhcpc and dig play the VM. Without systemd (the sandbox tier) the same
 * kind runs dnsmasq as a daemon: test/sandbox/natNetwork.test.ts.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { closeAllConnections } from "../../provider/host";
import { natNetworkProvider } from "../../provider/resources/natNetwork";
import { bootLabHost, LabHost } from "../../testbed/labHost";

jest.setTimeout(15 * 60_000);

const ns = `kvl-nat${process.pid}`;
const sh = (c: string) => execFileSync("sh", ["-c", c], { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
let lab: LabHost;
let lanIf = "";
let tmp = "";
let dhcpScript = "";

const UNIT = "kvmnet-dnsmasq-lab.service";
const args = (over: Record<string, unknown> = {}) => ({
  connection: { host: "127.0.0.1", port: lab.port, user: "root", privateKey: lab.privateKey, hostKey: lab.hostKeyFingerprint },
  name: "lab",
  mode: "isolated",
  subnet: "10.66.0.0/24",
  dhcp: { start: "10.66.0.100", end: "10.66.0.150", hosts: [{ mac: "52:54:00:66:00:10", ip: "10.66.0.10", hostname: "web" }] },
  dns: { domain: "lab.test", hosts: [{ ip: "10.66.0.5", hostnames: ["db"] }] },
  ...over,
});

async function create(over: Record<string, unknown> = {}) {
  const { inputs, failures } = await natNetworkProvider.check({}, args(over));
  expect(failures ?? []).toEqual([]);
  return { inputs, ...(await natNetworkProvider.create(inputs)) };
}

async function unit(prop: string): Promise<string> {
  return (await lab.exec(`systemctl show -p ${prop} --value ${UNIT}`, { allowFail: true })).stdout.trim();
}

/** DHCP from the namespace's side of the LAN (the "VM"); returns the leased address. */
function dhcp(): string {
  sh(`ip -n ${ns} addr flush dev ${lab.lan!.tap}`);
  sh(`ip netns exec ${ns} busybox udhcpc -i ${lab.lan!.tap} -n -q -f -t 8 -T 1 -s ${dhcpScript}`);
  const a = JSON.parse(sh(`ip -n ${ns} -j -4 addr show dev ${lab.lan!.tap}`))[0]?.addr_info ?? [];
  return a[0]?.local ?? "";
}

function resolve(name: string): string {
  try {
    return sh(`ip netns exec ${ns} dig +short +time=2 +tries=2 @10.66.0.1 ${name}`).trim();
  } catch {
    return "";
  }
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-labnat-"));
  dhcpScript = path.join(tmp, "udhcpc.sh");
  fs.writeFileSync(dhcpScript, ["#!/bin/sh", 'case "$1" in', '  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;', "esac", ""].join("\n"), {
    mode: 0o755,
  });
  sh(`ip netns add ${ns}`);
  lab = await bootLabHost({ lan: { netns: ns }, extraNics: false });
  lanIf = (await lab.exec(`ip -br link | awk '$3 == "${lab.macs.lan}" {print $1}'`)).stdout.trim();
  expect(lanIf).toMatch(/^eth[1-9]$/);
});

afterAll(async () => {
  closeAllConnections();
  await lab?.shutdown();
  try {
    sh(`ip netns del ${ns}`);
  } catch {
    /* not created */
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("NatNetwork on a systemd host (lab guest)", () => {
  let created: Awaited<ReturnType<typeof create>>;

  it("runs dnsmasq as its own unit, which serves DHCP leases and DNS names to a guest on the bridge", async () => {
    expect((await lab.exec("[ -d /run/systemd/system ] && echo yes")).stdout.trim()).toBe("yes");
    created = await create();
    expect(created.outs.dnsmasqUnit).toBe(UNIT);
    expect(await unit("ActiveState")).toBe("active");
    expect(await unit("Type")).toBe("forking");
    // systemd tracks the very process the output names.
    expect(Number(await unit("MainPID"))).toBe(created.outs.dnsmasqPid);
    expect((await lab.exec(`cat /run/systemd/system/${UNIT}`)).stdout).toContain("PIDFile=/run/kvmnet/nat/lab/dnsmasq.pid");

    // The "VM": the guest's LAN NIC joins the bridge, the namespace's tap is its NIC.
    await lab.exec(`ip link set ${lanIf} master kvn-lab && ip link set ${lanIf} up`);
    const leased = dhcp();
    expect(leased).toMatch(/^10\.66\.0\.(\d+)$/);
    const last = Number(leased.split(".")[3]);
    expect(last).toBeGreaterThanOrEqual(100);
    expect(last).toBeLessThanOrEqual(150);
    expect(resolve("db.lab.test")).toBe("10.66.0.5");
    // The journal has the service's log lines, as for any unit.
    expect((await lab.exec(`journalctl -u ${UNIT} --no-pager -o cat`)).stdout).toMatch(/DHCPACK\(kvn-lab\)/);
  });

  it("a hosts change reloads the unit (same pid, leases kept); a config change restarts it", async () => {
    const pid = Number(await unit("MainPID"));
    const leasesBefore = (await lab.exec("cat /run/kvmnet/nat/lab/leases")).stdout;
    expect(leasesBefore).toMatch(/10\.66\.0\.1\d\d/);
    const next = args({
      dns: {
        domain: "lab.test",
        hosts: [
          { ip: "10.66.0.5", hostnames: ["db"] },
          { ip: "10.66.0.6", hostnames: ["cache"] },
        ],
      },
    });
    const checked = (await natNetworkProvider.check({}, next)).inputs;
    const r = await natNetworkProvider.update(created.id, created.outs, checked);
    expect(r.outs.dnsmasqPid).toBe(pid);
    expect(Number(await unit("MainPID"))).toBe(pid);
    expect(resolve("cache.lab.test")).toBe("10.66.0.6");
    expect((await lab.exec("cat /run/kvmnet/nat/lab/leases")).stdout).toBe(leasesBefore);

    const range = args({ dhcp: { start: "10.66.0.160", end: "10.66.0.170" } });
    const r2 = await natNetworkProvider.update(created.id, r.outs, (await natNetworkProvider.check({}, range)).inputs);
    expect(r2.outs.dnsmasqPid).not.toBe(pid);
    expect(Number(await unit("MainPID"))).toBe(r2.outs.dnsmasqPid);
    expect(await unit("ActiveState")).toBe("active");
    const last = Number(dhcp().split(".")[3]);
    expect(last).toBeGreaterThanOrEqual(160);
    expect(last).toBeLessThanOrEqual(170);
    created = { ...created, inputs: (await natNetworkProvider.check({}, range)).inputs, outs: r2.outs };
  });

  it("systemd restarts a crashed dnsmasq, and read reports the new pid without drift", async () => {
    const pid = Number(await unit("MainPID"));
    await lab.exec(`kill -KILL ${pid}`);
    let now = pid;
    for (let i = 0; i < 100 && (now === pid || now === 0); i++) {
      await new Promise((res) => setTimeout(res, 200));
      now = Number(await unit("MainPID"));
    }
    expect(now).not.toBe(pid);
    expect(now).toBeGreaterThan(0);
    const read = await natNetworkProvider.read(created.id, created.outs);
    expect(read.props.dnsmasqPid).toBe(now);
    expect(read.inputs?.dhcp).toEqual(created.inputs.dhcp);
  });

  it("delete stops the unit and removes its file; nothing of the network is left", async () => {
    await natNetworkProvider.delete(created.id, created.outs);
    expect((await lab.exec(`systemctl status ${UNIT}`, { allowFail: true })).code).toBe(4); // "could not be found"
    expect((await lab.exec(`ls /run/systemd/system/${UNIT}`, { allowFail: true })).code).not.toBe(0);
    expect((await lab.exec("ls /run/kvmnet", { allowFail: true })).code).not.toBe(0);
    expect((await lab.exec("ip link show kvn-lab", { allowFail: true })).code).not.toBe(0);
    expect((await lab.exec("nft list tables")).stdout).not.toContain("kvmnet");
    expect((await lab.exec("pgrep -x dnsmasq", { allowFail: true })).stdout.trim()).toBe("");
  });

  it("a unit that fails to start is reported with the journal's words and removed with everything else", async () => {
    // A dnsmasq that refuses to start, found first on systemd's search path.
    await lab.exec(`printf '#!/bin/sh\\necho "kvmnet-test: dnsmasq refuses to start" >&2\\nexit 3\\n' > /usr/local/sbin/dnsmasq && chmod 755 /usr/local/sbin/dnsmasq`);
    try {
      const { inputs } = await natNetworkProvider.check({}, args());
      await expect(natNetworkProvider.create(inputs)).rejects.toThrow(/start dnsmasq for lab[\s\S]*kvmnet-test: dnsmasq refuses to start/);
    } finally {
      await lab.exec("rm -f /usr/local/sbin/dnsmasq");
    }
    expect((await lab.exec(`systemctl status ${UNIT}`, { allowFail: true })).code).toBe(4);
    expect((await lab.exec("ls /run/kvmnet", { allowFail: true })).code).not.toBe(0);
    expect((await lab.exec("ip link show kvn-lab", { allowFail: true })).code).not.toBe(0);
    expect((await lab.exec("nft list tables")).stdout).not.toContain("kvmnet");
  });
});

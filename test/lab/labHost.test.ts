/**
 * Tests of the tier-3 lab host harness (testbed/labHost.ts): the image builds (or is
 * found in its cache), a guest boots under TCG, SSH works with the pinned host key,
 * systemd comes up, eth0 is the slirp NIC, the IOMMU is on, 802.1Q works, and
 * shutdown leaves no qemu (by pid), no overlay and no record behind.
 *
 * Slow: a cold image build is minutes, a boot ~30 s under TCG. Needs root. Under
 * CI=true a machine that cannot run lab hosts FAILS here (checkLabSupport throws).
 */
import { execFileSync, spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import {
  bootLabHost,
  checkLabSupport,
  cleanupStaleLab,
  ensureLabImage,
  fingerprintOfKeyLine,
  labPaths,
  LabHost,
  listLabBoots,
  listLabSnapshots,
  qemuArgs,
  snapshotKey,
} from "../../testbed/labHost";
import { isAlive } from "../../testbed/processes";

jest.setTimeout(30 * 60_000);

const timings: Record<string, number> = {};

function ppid(pid: number): number | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(raw.slice(raw.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

describe("lab host harness", () => {
  let imageDir = "";
  let host: LabHost | undefined;

  beforeAll(async () => {
    checkLabSupport();
    cleanupStaleLab();
    const first = await ensureLabImage();
    timings.imageFirstCallMs = first.ms;
    timings.imageFirstCallCached = first.cached ? 1 : 0;
    const again = await ensureLabImage();
    timings.imageCacheHitMs = again.ms;
    expect(again.cached).toBe(true);
    expect(again.dir).toBe(first.dir);
    imageDir = first.dir;
  });

  afterAll(async () => {
    await host?.shutdown();
    console.log(`lab timings: ${JSON.stringify(timings)}`);
  });

  it("the image dir has everything a boot needs, and the host key pin matches the key file", () => {
    for (const f of ["rootfs.img", "vmlinuz", "initrd.img", "ssh_host_ed25519_key.pub", "id_ed25519", "id_ed25519.pub"]) {
      expect(fs.existsSync(`${imageDir}/${f}`)).toBe(true);
    }
    const line = fs.readFileSync(`${imageDir}/ssh_host_ed25519_key.pub`, "utf8");
    expect(fingerprintOfKeyLine(line)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    timings.rootfsApparentMiB = Math.round(fs.statSync(`${imageDir}/rootfs.img`).size / 2 ** 20);
    timings.rootfsOnDiskMiB = Math.round((fs.statSync(`${imageDir}/rootfs.img`).blocks * 512) / 2 ** 20);
  });

  it("the qemu command line is TCG only, slirp isolated, loopback-only forward", () => {
    const args = qemuArgs({
      imageDir: "/img",
      overlay: "/tmp/o.qcow2",
      serialLog: "/tmp/s.log",
      port: 2222,
      memoryMb: 1024,
      cpus: 2,
      extraNics: true,
      kernelArgs: [],
      machineId: "0".repeat(32),
      name: "kvmnet-lab-test",
    });
    const line = args.join(" ");
    expect(line).toContain("-accel tcg,thread=multi");
    expect(line).not.toMatch(/enable-kvm|accel kvm/);
    expect(line).toContain("restrict=on");
    expect(line).toContain("hostfwd=tcp:127.0.0.1:2222-:22");
    expect(line).not.toMatch(/tap|bridge/);
    expect(line).toContain("net.ifnames=0");
    expect(line).toContain("intel_iommu=on");
  });

  it("boots, and SSH with the pinned host key works", async () => {
    // A cold boot on purpose: these are the boot's own facts (a restore is tested below).
    host = await bootLabHost({ imageDir, snapshot: false });
    timings.bootToSshMs = host.bootMs;
    expect(host.boot.mode).toBe("cold");
    expect(host.address).toBe("127.0.0.1");
    expect(host.user).toBe("root");
    expect(host.hostKeyFingerprint).toBe(fingerprintOfKeyLine(host.hostKeyLine));
    expect(fs.existsSync(host.overlayPath)).toBe(true);
    expect(listLabBoots().some((b) => b.id === host!.id && b.qemuPid === host!.qemuPid)).toBe(true);
    const r = await host.exec("id -u; hostname");
    expect(r.stdout.split("\n").slice(0, 2)).toEqual(["0", "kvmnet-lab"]);
    // The guest's own host key is the pinned one.
    const k = await host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub");
    expect(fingerprintOfKeyLine(k.stdout)).toBe(host.hostKeyFingerprint);
    // Non-zero exits reject unless allowFail.
    await expect(host.exec("exit 3")).rejects.toThrow(/exit 3/);
    expect((await host.exec("exit 3", { allowFail: true })).code).toBe(3);
  });

  it("a wrong host key pin is refused", async () => {
    const { Client } = await import("ssh2");
    const c = new Client();
    const verdict = await new Promise<string>((resolve) => {
      c.on("ready", () => resolve("ready"));
      c.on("error", (e) => resolve(`error: ${e.message}`));
      c.connect({
        host: "127.0.0.1",
        port: host!.port,
        username: "root",
        privateKey: host!.privateKey,
        readyTimeout: 30_000,
        hostVerifier: () => false,
      });
    });
    c.end();
    expect(verdict).toMatch(/^error:/);
  });

  it("systemd reaches running or degraded", async () => {
    const r = await host!.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 180_000 });
    const state = r.stdout.trim();
    if (state === "degraded") {
      const failed = await host!.exec("systemctl --failed --no-legend --plain", { allowFail: true });
      console.log(`lab guest is degraded; failed units:\n${failed.stdout}`);
    }
    expect(["running", "degraded"]).toContain(state);
  });

  it("eth0 is the slirp NIC with the static address and default route", async () => {
    const links = JSON.parse((await host!.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
    const eth0 = links.find((l) => l.ifname === "eth0");
    expect(eth0?.address).toBe(host!.macs.eth0);
    const addrs = JSON.parse((await host!.exec("ip -j -4 addr show dev eth0")).stdout) as { addr_info: { local: string; prefixlen: number }[] }[];
    expect(addrs[0]?.addr_info).toEqual(expect.arrayContaining([expect.objectContaining({ local: "10.0.2.15", prefixlen: 24 })]));
    const routes = JSON.parse((await host!.exec("ip -j route show default")).stdout) as { gateway?: string; dev?: string }[];
    expect(routes).toEqual([expect.objectContaining({ gateway: "10.0.2.2", dev: "eth0" })]);
    // The passthrough candidates are there too (as eth1/eth2 or whatever the kernel named them).
    const macs = links.map((l) => l.address);
    expect(macs).toEqual(expect.arrayContaining([host!.macs.e1000, host!.macs.virtio]));
  });

  it("the IOMMU is on: /sys/kernel/iommu_groups is non-empty", async () => {
    const r = await host!.exec("ls /sys/kernel/iommu_groups");
    expect(r.stdout.trim().split(/\s+/).filter(Boolean).length).toBeGreaterThan(0);
    // The e1000 (00:04.0) sits in an IOMMU group of its own making.
    const g = await host!.exec("readlink /sys/bus/pci/devices/0000:00:04.0/iommu_group");
    expect(g.stdout.trim()).toMatch(/iommu_groups\/\d+$/);
  });

  it("802.1Q works: modprobe 8021q and a VLAN sub-interface on eth0", async () => {
    await host!.exec("modprobe 8021q && ip link add link eth0 name eth0.10 type vlan id 10");
    const d = JSON.parse((await host!.exec("ip -j -d link show dev eth0.10")).stdout) as { linkinfo?: { info_kind?: string; info_data?: { id?: number } } }[];
    expect(d[0]?.linkinfo?.info_kind).toBe("vlan");
    expect(d[0]?.linkinfo?.info_data?.id).toBe(10);
    await host!.exec("ip link del dev eth0.10");
  });

  it("shutdown powers off cleanly and leaves no qemu, overlay, run dir or record", async () => {
    const h = host!;
    const { qemuPid, overlayPath, dir, id } = h;
    const r = await h.shutdown();
    timings.shutdownMs = r.ms;
    expect(r.clean).toBe(true);
    expect(isAlive(qemuPid)).toBe(false); // gone, or a zombie nobody has reaped yet
    expect(fs.existsSync(overlayPath)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(`${labPaths.vmsDir}/${id}.json`)).toBe(false);
    // Idempotent.
    await expect(h.shutdown()).resolves.toEqual(r);
    await expect(h.exec("true")).rejects.toThrow(/shut down/);
    host = undefined;
  });

  it("a guest kernel that panics while booting fails the boot at once, with the panic in the error", async () => {
    // init=/bin/false: the kernel boots, init exits, "Kernel panic - not syncing:
    // Attempted to kill init!". Before the harness read the serial console for it,
    // the wait ran to its SSH timeout (a panic seen in CI cost 300 s).
    let err: Error | undefined;
    const started = Date.now();
    try {
      const unexpected = await bootLabHost({ imageDir, kernelArgs: ["init=/bin/false"], snapshot: false, sshTimeoutMs: 900_000 });
      await unexpected.shutdown();
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toMatch(/guest kernel panicked while booting/);
    expect(err?.message).toMatch(/Kernel panic - not syncing/);
    console.log(`panic boot failed after ${Date.now() - started} ms`);
    expect(listLabBoots().filter((b) => b.ownerPid === process.pid && b.alive)).toEqual([]);
  }, 300_000);

  it("a LAN tap lives in the test's namespace: IP and 802.1Q-tagged frames cross it; the root namespace is untouched", async () => {
    const ns = `kvl-t${process.pid}`;
    const sh = (c: string) => execFileSync("sh", ["-c", c], { encoding: "utf8" });
    const rootLinksBefore = fs.readdirSync("/sys/class/net").sort();
    sh(`ip netns add ${ns}`);
    let lanHost: LabHost | undefined;
    try {
      lanHost = await bootLabHost({ imageDir, lan: { netns: ns } });
      const tap = lanHost.lan!.tap;
      expect(sh(`ip -n ${ns} -br link show dev ${tap}`)).toMatch(/UP/);
      expect(fs.readdirSync("/sys/class/net").sort()).toEqual(rootLinksBefore);
      const lanIf = (await lanHost.exec(`ip -br link | awk '$3 == "${lanHost.macs.lan}" {print $1}'`)).stdout.trim();
      expect(lanIf).toMatch(/^eth\d$/);
      expect(lanIf).not.toBe("eth0");
      sh(`ip -n ${ns} addr add 192.0.2.1/24 dev ${tap}`);
      await lanHost.exec(
        `ip link set ${lanIf} up && ip addr add 192.0.2.2/24 dev ${lanIf} && modprobe 8021q && ` +
          `ip link add link ${lanIf} name ${lanIf}.10 type vlan id 10 && ip link set ${lanIf}.10 up && ip addr add 198.51.100.2/24 dev ${lanIf}.10`,
      );
      await lanHost.exec("ping -c 2 -W 3 192.0.2.1");
      // Tagged frames on the tap: tcpdump in the namespace while the guest pings over the VLAN.
      const dump = spawn("ip", ["netns", "exec", ns, "timeout", "20", "tcpdump", "-c", "2", "-e", "-n", "-l", "-i", tap, "vlan 10"], { stdio: ["ignore", "pipe", "ignore"] });
      let seen = "";
      dump.stdout.setEncoding("utf8").on("data", (d: string) => (seen += d));
      const done = new Promise<void>((r) => dump.on("close", () => r()));
      await new Promise((r) => setTimeout(r, 1500));
      await lanHost.exec("ping -c 3 -W 1 198.51.100.1", { allowFail: true });
      await done;
      expect(seen).toMatch(/802\.1Q.*vlan 10/);
      const r = await lanHost.shutdown();
      expect(r.clean).toBe(true);
      lanHost = undefined;
      // The tap went away with qemu.
      expect(sh(`ip -n ${ns} -br link`)).not.toContain(tap);
    } finally {
      await lanHost?.shutdown();
      sh(`ip netns del ${ns}`);
    }
  });

  it("a SIGKILLed owner leaves no qemu behind (pdeathsig), and cleanupStaleLab removes its dir and record", async () => {
    const script = `/tmp/kvl-killtest-${process.pid}.ts`;
    fs.writeFileSync(
      script,
      `import { bootLabHost } from ${JSON.stringify(path.join(__dirname, "..", "..", "testbed", "labHost"))};\n` +
        `bootLabHost({ imageDir: process.env.KVL_IMAGE_DIR }).catch((e) => { console.error(e); process.exit(1); });\n`,
    );
    const tsx = path.join(__dirname, "..", "..", "node_modules", ".bin", "tsx");
    const child = spawn(tsx, [script], { env: { ...process.env, KVL_IMAGE_DIR: imageDir }, stdio: "ignore" });
    try {
      // tsx runs the script in a grandchild node: find the boot whose qemu is up, then kill its owner.
      let boot: ReturnType<typeof listLabBoots>[number] | undefined;
      const deadline = Date.now() + 60_000;
      while (!boot && Date.now() < deadline) {
        boot = listLabBoots().find((b) => b.qemuPid !== undefined && b.alive && (b.ownerPid === child.pid || ppid(b.ownerPid) === child.pid));
        if (!boot) await new Promise((r) => setTimeout(r, 200));
      }
      expect(boot).toBeDefined();
      process.kill(boot!.ownerPid, "SIGKILL");
      const qemuGoneBy = Date.now() + 10_000;
      while (isAlive(boot!.qemuPid!) && Date.now() < qemuGoneBy) await new Promise((r) => setTimeout(r, 100));
      expect(isAlive(boot!.qemuPid!)).toBe(false);
      const removed = cleanupStaleLab();
      expect(removed.join("\n")).toContain(boot!.id);
      expect(fs.existsSync(boot!.dir)).toBe(false);
      expect(listLabBoots().some((b) => b.id === boot!.id)).toBe(false);
    } finally {
      if (child.pid && child.exitCode === null) child.kill("SIGKILL");
      fs.rmSync(script, { force: true });
    }
  });
});

/** Kernel banners on a host's serial console: one per kernel boot in that qemu. */
const kernelBanners = (h: LabHost) => (fs.readFileSync(h.serialLogPath, "utf8").match(/Linux version \d/g) ?? []).length;
const sha256 = (file: string) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");

describe("boot once, restore many (snapshots)", () => {
  let imageDir = "";
  const hosts: LabHost[] = [];

  beforeAll(async () => {
    checkLabSupport();
    imageDir = (await ensureLabImage()).dir;
  });

  afterAll(async () => {
    for (const h of hosts) await h.shutdown();

    console.log(`lab snapshot timings: ${JSON.stringify(timings)}`);
  });

  it("a configuration's second boot is a restore: a working host with the devices asked for, settled, its clock set", async () => {
    const first = await bootLabHost({ imageDir });
    hosts.push(first);
    timings.firstCallMode = first.boot.mode === "restored" ? 1 : 0;
    if (first.boot.built) Object.assign(timings, Object.fromEntries(Object.entries(first.boot.built).map(([k, v]) => [`build.${k}`, v])));
    await first.shutdown();
    const h = await bootLabHost({ imageDir });
    hosts.push(h);
    timings.restoreToSshMs = h.bootMs;
    expect(h.boot).toEqual({ mode: "restored", snapshotKey: snapshotKey({ imageDir }) });
    expect(listLabSnapshots().some((s) => s.key === h.boot.snapshotKey)).toBe(true);
    // The devices of the configuration, eth0 the slirp NIC with its address and route.
    const links = JSON.parse((await h.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
    expect(links.find((l) => l.ifname === "eth0")?.address).toBe(h.macs.eth0);
    expect(links.map((l) => l.address)).toEqual(expect.arrayContaining([h.macs.e1000, h.macs.virtio]));
    expect((await h.exec("ip -j route show default")).stdout).toContain('"gateway":"10.0.2.2"');
    expect((await h.exec("ls /sys/kernel/iommu_groups | wc -l")).stdout.trim()).not.toBe("0");
    // Saved settled: nothing left to wait for, no IPv6 address tentative.
    expect((await h.exec("systemctl is-system-running", { allowFail: true })).stdout.trim()).toMatch(/^(running|degraded)$/);
    expect((await h.exec("ip -6 addr show tentative")).stdout.trim()).toBe("");
    // The clock resumed at the save; the restore set it from the host's.
    const skew = Math.abs(Number((await h.exec("date +%s%3N")).stdout.trim()) - Date.now());
    timings.restoredClockSkewMs = skew;
    expect(skew).toBeLessThan(5000);
  });

  it("a reboot of a restored host is a real new boot, from the restored disk; the snapshot's files do not change", async () => {
    const h = hosts[hosts.length - 1];
    const snapDir = `${labPaths.snapshotsDir}/${h.boot.snapshotKey}`;
    const before = { disk: sha256(`${snapDir}/disk.qcow2`), state: sha256(`${snapDir}/state.bin`), diskMtime: fs.statSync(`${snapDir}/disk.qcow2`).mtimeMs };
    const banners = kernelBanners(h);
    const marker = crypto.randomBytes(8).toString("hex");
    // Writes all over the disk, then a real reboot.
    await h.exec(`echo ${marker} > /root/kvl-restore-marker && dd if=/dev/urandom of=/root/kvl-fill bs=1M count=32 status=none && sync`);
    const r = await h.reboot();
    timings.restoredRebootMs = r.ms;
    expect(r.bootIdAfter).not.toBe(r.bootIdBefore);
    expect(kernelBanners(h)).toBe(banners + 1);
    expect((await h.exec("cat /root/kvl-restore-marker")).stdout.trim()).toBe(marker);
    expect((await h.exec("cat /proc/cmdline")).stdout).toContain("kvmnet_lab.eth0_mac=");
    await h.exec("rm -f /root/kvl-fill && sync");
    expect({ disk: sha256(`${snapDir}/disk.qcow2`), state: sha256(`${snapDir}/state.bin`), diskMtime: fs.statSync(`${snapDir}/disk.qcow2`).mtimeMs }).toEqual(before);
    // And the next restore does not see what this one wrote.
    const next = await bootLabHost({ imageDir });
    hosts.push(next);
    expect(next.boot.mode).toBe("restored");
    expect((await next.exec("cat /root/kvl-restore-marker", { allowFail: true })).code).not.toBe(0);
    // Two restores of one snapshot draw different random numbers (the pool was reseeded).
    const [a, b] = await Promise.all([h, next].map(async (x) => (await x.exec("head -c 16 /dev/urandom | od -An -tx1")).stdout));
    expect(a).not.toBe(b);
  });

  it("a corrupt snapshot falls back to a cold boot (and is built again)", async () => {
    const key = snapshotKey({ imageDir });
    const state = `${labPaths.snapshotsDir}/${key}/state.bin`;
    expect(fs.existsSync(state)).toBe(true);
    fs.truncateSync(state, Math.floor(fs.statSync(state).size / 2));
    const h = await bootLabHost({ imageDir });
    hosts.push(h);
    expect(h.boot.fallback).toMatch(new RegExp(`restore of lab snapshot ${key} failed`));
    // It booted cold (the build's cold boot), saved a good snapshot and restored that.
    expect(h.boot.built?.coldBootMs).toBeGreaterThan(0);
    expect((await h.exec("id -u")).stdout.trim()).toBe("0");
    expect(fs.statSync(state).size).toBe(h.boot.built?.stateBytes);
  });

  it("cleanupStaleLab removes a half-written snapshot whose builder is gone, and leaves a live builder's alone", () => {
    const deadPid = spawnSync("true").pid;
    const stat = (pid: number) => fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[19];
    const mk = (key: string, owner: { pid: number; start: string }) => {
      const dir = `${labPaths.snapshotsDir}/.build-${key}`;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(`${dir}/owner.json`, JSON.stringify({ owner }));
      fs.writeFileSync(`${dir}/state.bin`, "half");
      return dir;
    };
    const dead = mk("0000000000000000dead", { pid: deadPid, start: "1" });
    const alive = mk("000000000000000a11fe", { pid: process.pid, start: stat(process.pid) });
    try {
      const removed = cleanupStaleLab();
      expect(removed.join("\n")).toContain("0000000000000000dead");
      expect(fs.existsSync(dead)).toBe(false);
      expect(fs.existsSync(alive)).toBe(true);
    } finally {
      fs.rmSync(dead, { recursive: true, force: true });
      fs.rmSync(alive, { recursive: true, force: true });
    }
  });
});

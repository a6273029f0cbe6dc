/**
 * Tests of the tier-3 lab host harness (test/lab/labHost.ts): the image builds (or is
 * found in its cache), a guest boots under TCG, SSH works with the pinned host key,
 * systemd comes up, eth0 is the slirp NIC, the IOMMU is on, 802.1Q works, and
 * shutdown leaves no qemu (by pid), no overlay and no record behind.
 *
 * Slow: a cold image build is minutes, a boot ~30 s under TCG. Needs root. Under
 * CI=true a machine that cannot run lab hosts FAILS here (checkLabSupport throws).
 */
import * as fs from "fs";
import { bootLabHost, checkLabSupport, cleanupStaleLab, ensureLabImage, fingerprintOfKeyLine, labPaths, LabHost, listLabBoots, qemuArgs } from "./labHost";

jest.setTimeout(30 * 60_000);

const timings: Record<string, number> = {};

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
    // eslint-disable-next-line no-console
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
    host = await bootLabHost({ imageDir });
    timings.bootToSshMs = host.bootMs;
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
      // eslint-disable-next-line no-console
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
    expect(fs.existsSync(`/proc/${qemuPid}`) && !/^\S+ \S+ [ZX]/.test(fs.readFileSync(`/proc/${qemuPid}/stat`, "utf8").replace(/\(.*\)/, "x"))).toBe(false);
    expect(fs.existsSync(overlayPath)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(`${labPaths.vmsDir}/${id}.json`)).toBe(false);
    // Idempotent.
    await expect(h.shutdown()).resolves.toEqual(r);
    await expect(h.exec("true")).rejects.toThrow(/shut down/);
    host = undefined;
  });
});

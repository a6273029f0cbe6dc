/**
 * The lab guest's network stack can be switched, for real, across reboots
 * (test/lab/stacks.ts): one guest, rebooted into networkd, then NetworkManager,
 * then ifupdown. After each reboot: a new boot_id (and one more kernel banner on
 * the serial console), files written before the reboot are still there, exactly
 * the chosen stack is active and is what the provider's detection reports, eth0
 * has 10.0.2.15/24 and the default route via 10.0.2.2 as configured by that
 * stack, and SSH works.
 *
 * The last reboot also proves the eth0 pin (scripts/lab-image.sh,
 * kvmnet-lab-nic-names.service): a unit injected for that boot hands the name
 * eth0 to the e1000 before the pin runs — what the NIC probe-order race does —
 * and eth0 must still be the slirp NIC afterwards.
 *
 * Needs root; under CI=true a machine that cannot run lab hosts fails here
 * (checkLabSupport throws), never skips. One VM, shut down in afterAll.
 */
import * as fs from "fs";
import { bootLabHost, checkLabSupport, cleanupStaleLab, LabHost, qemuArgs } from "../../testbed/labHost";
import { activeStack, eth0Facts, LAB_ETH0, NetworkStack, STACK_PATHS, useNetworkStack } from "./stacks";

jest.setTimeout(20 * 60_000);

const timings: Record<string, number> = {};
let lab: LabHost | undefined;

const kernelBanners = (h: LabHost) => (fs.readFileSync(h.serialLogPath, "utf8").match(/Linux version \d/g) ?? []).length;
const bootId = async (h: LabHost) => (await h.exec("cat /proc/sys/kernel/random/boot_id")).stdout.trim();

/** A one-boot unit that gives eth0 to the NIC with `mac` before the pin runs (it removes itself). */
const RACE_UNIT = "/etc/systemd/system/kvl-nic-race.service";
const RACE_SCRIPT = "/usr/local/sbin/kvl-nic-race";
function raceFiles(mac: string): { unit: string; script: string } {
  const script = [
    "#!/bin/sh",
    "udevadm settle --timeout=60 || true",
    "o=",
    `for d in /sys/class/net/*; do [ "$(cat "$d/address")" = ${mac} ] && o="\${d##*/}"; done`,
    'if [ -z "$o" ] || [ "$o" = eth0 ]; then echo "kvl-nic-race: nothing to do ($o)" >/dev/kmsg; exit 0; fi',
    'ip link set dev eth0 name kvlrace && ip link set dev "$o" name eth0 && ip link set dev kvlrace name "$o"',
    `echo "kvl-nic-race: gave eth0 to ${mac}, the old eth0 is now $o" >/dev/kmsg`,
    `rm -f ${RACE_UNIT} /etc/systemd/system/sysinit.target.wants/kvl-nic-race.service ${RACE_SCRIPT}`,
    "",
  ].join("\n");
  const unit = [
    "[Unit]",
    "Description=kvmnet lab test: hand eth0 to another NIC, as the NIC probe-order race does",
    "DefaultDependencies=no",
    "After=systemd-udevd.service systemd-udev-trigger.service",
    "Before=kvmnet-lab-nic-names.service",
    "[Service]",
    "Type=oneshot",
    `ExecStart=${RACE_SCRIPT}`,
    "[Install]",
    "WantedBy=sysinit.target",
    "",
  ].join("\n");
  return { unit, script };
}

beforeAll(async () => {
  checkLabSupport();
  cleanupStaleLab();
  lab = await bootLabHost(); // with the e1000 and virtio-net passthrough candidates
  timings.bootMs = lab.bootMs;
});

afterAll(async () => {
  if (lab) timings.shutdownMs = (await lab.shutdown()).ms;
  console.log(`stacks lab timings: ${JSON.stringify(timings)}`);
});

it("qemu resets on a guest reboot (never -no-reboot); the kernel command line names the slirp MAC for the eth0 pin", () => {
  const args = qemuArgs({
    imageDir: "/img",
    overlay: "/o",
    serialLog: "/s",
    port: 2222,
    memoryMb: 1024,
    cpus: 2,
    extraNics: true,
    kernelArgs: [],
    machineId: "0".repeat(32),
    name: "kvmnet-lab-t",
  });
  expect(args).not.toContain("-no-reboot");
  expect(args.join(" ")).toContain("-action reboot=reset");
  expect(args[args.indexOf("-append") + 1]).toContain(`kvmnet_lab.eth0_mac=${lab!.macs.eth0}`);
});

it("the fresh guest: ifupdown configured eth0 (NetworkManager runs too, for the other NICs), and the pin found eth0 right", async () => {
  const a = await activeStack(lab!);
  expect(a.units.networking).toBe("active");
  expect(a.ifstate && a.ifup).toBe(true);
  const f = await eth0Facts(lab!);
  expect(f.mac).toBe(lab!.macs.eth0);
  expect(f.ifupdown).toMatch(/^eth0=eth0$/m);
  console.log(`fresh guest: active ${JSON.stringify(a.units)} → detected as ${a.stack}`);
  expect((await lab!.exec("systemctl is-active kvmnet-lab-nic-names.service")).stdout.trim()).toBe("active");
  // The pin ran this boot (normally with nothing to do: the softdep gets the kernel's order right).
  expect((await lab!.exec("dmesg")).stdout).toMatch(new RegExp(`kvmnet-lab-nic-names: (eth0 is ${lab!.macs.eth0}|swapped: ${lab!.macs.eth0})`));
});

describe.each<[NetworkStack, boolean]>([
  ["networkd", false],
  ["networkmanager", false],
  ["ifupdown", true],
])("switch to %s and reboot", (stack, injectRace) => {
  it(`exactly ${stack} is active after a real reboot, eth0 is configured by it, SSH works${injectRace ? "; eth0 stays the slirp NIC when the kernel handed the name to the e1000" : ""}`, async () => {
    const h = lab!;
    const before = await bootId(h);
    const banners = kernelBanners(h);
    const marker = `${stack} ${before}`;
    await h.exec(`mkdir -p /var/lib/kvl-stacks && echo '${marker}' > /var/lib/kvl-stacks/${stack} && sync`);
    if (injectRace) {
      const r = raceFiles(h.macs.e1000!);
      const b = (t: string) => Buffer.from(t).toString("base64");
      await h.exec(
        `echo ${b(r.script)} | base64 -d > ${RACE_SCRIPT} && chmod 755 ${RACE_SCRIPT} && echo ${b(r.unit)} | base64 -d > ${RACE_UNIT} && systemctl enable --quiet kvl-nic-race.service && sync`,
      );
    }

    const sw = await useNetworkStack(h, stack);
    timings[`${stack}.switchMs`] = sw.switchMs;
    timings[`${stack}.rebootMs`] = sw.reboot.ms;
    timings[`${stack}.settleMs`] = sw.settleMs;
    timings[`${stack}.configureMs`] = sw.configureMs;
    if (sw.failedUnits.length) console.log(`${stack}: degraded, failed units: ${sw.failedUnits.join(" ")}`);

    // A real reboot: a new boot id (read here, not only as reboot() reports it) and one more kernel banner.
    const after = await bootId(h);
    expect(sw.reboot.bootIdBefore).toBe(before);
    expect(sw.reboot.bootIdAfter).toBe(after);
    expect(after).not.toBe(before);
    expect(kernelBanners(h)).toBe(banners + 1);
    // The same disk: what was written before the reboot is there.
    expect((await h.exec(`cat /var/lib/kvl-stacks/${stack}`)).stdout.trim()).toBe(marker);

    // Exactly the chosen stack, as the provider will detect it.
    const a = await activeStack(h);
    expect(a.stack).toBe(stack);
    expect(a.active).toEqual([stack]);
    const inactive = (u: string) => expect(["inactive", "failed"]).toContain(u);
    if (stack === "ifupdown") {
      expect(a.units.networking).toBe("active");
      expect(a.ifstate).toBe(true);
    } else {
      inactive(a.units.networking);
      expect(a.ifstate).toBe(false);
    }
    if (stack === "networkd") {
      expect(a.units["systemd-networkd"]).toBe("active");
    } else {
      inactive(a.units["systemd-networkd"]);
      inactive(a.units["systemd-networkd.socket"]);
    }
    if (stack === "networkmanager") expect(a.units.NetworkManager).toBe("active");
    else inactive(a.units.NetworkManager);

    // The files: interfaces always there with its source line; only the chosen stack's eth0 config.
    const interfaces = (await h.exec(`cat ${STACK_PATHS.interfaces}`)).stdout;
    expect(interfaces).toMatch(/^source \/etc\/network\/interfaces\.d\/\*$/m);
    expect(interfaces).toMatch(/^iface lo inet loopback$/m);
    expect(/^iface eth0\b/m.test(interfaces)).toBe(stack === "ifupdown");
    const present = (p: string) => h.exec(`test -e ${p}`, { allowFail: true }).then((r) => r.code === 0);
    expect(await present(STACK_PATHS.networkd)).toBe(stack === "networkd");
    expect(await present(STACK_PATHS.networkmanager)).toBe(stack === "networkmanager");
    if (stack === "networkmanager") expect((await h.exec(`stat -c '%a %U' ${STACK_PATHS.networkmanager}`)).stdout.trim()).toBe("600 root");

    // eth0: the slirp NIC, 10.0.2.15/24, default via 10.0.2.2, and the stack says it configured it.
    const f = await eth0Facts(h);
    expect(f.mac).toBe(h.macs.eth0);
    expect(f.ipv4).toContain(`${LAB_ETH0.address}/${LAB_ETH0.prefixlen}`);
    expect(f.defaultRoutes).toEqual([expect.objectContaining({ gateway: LAB_ETH0.gateway, dev: "eth0" })]);
    if (stack === "ifupdown") expect(f.ifupdown).toMatch(/^eth0=eth0$/m);
    if (stack === "networkd") expect(f.networkd).toMatch(/\beth0\s+ether\s+\S+\s+configured\b/);
    if (stack === "networkmanager") expect(f.networkmanager.split("\n")).toEqual(["100 (connected)", "lab-eth0"]);

    // SSH works on a fresh connection too.
    await h.waitForSsh(60_000);
    expect((await h.exec("hostname")).stdout.trim()).toBe("kvmnet-lab");

    if (injectRace) {
      const dmesg = (await h.exec("dmesg")).stdout;
      // The injected race really happened this boot ...
      expect(dmesg).toMatch(new RegExp(`kvl-nic-race: gave eth0 to ${h.macs.e1000}, the old eth0 is now eth\\d`));
      // ... and the pin swapped eth0 back to the slirp NIC.
      expect(dmesg).toMatch(new RegExp(`kvmnet-lab-nic-names: swapped: ${h.macs.eth0} was eth\\d, now eth0; ${h.macs.e1000} was eth0, now eth\\d`));
      const links = JSON.parse((await h.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
      expect(links.find((l) => l.address === h.macs.e1000)?.ifname).toMatch(/^eth[1-9]$/);
      expect(await present(RACE_UNIT)).toBe(false); // one boot only
      expect(await present(RACE_SCRIPT)).toBe(false);
    }
  });
});

import { rebootPhases, StampedLine } from "../../../testbed/rebootPhases";

// Lines as the lab guest's serial console printed them during a reboot (captured
// on this machine; ANSI colour codes as systemd writes them), stamped in host ms.
const ESC = "\x1b";
const ok = (what: string) => `[${ESC}[0;32m  OK  ${ESC}[0m] ${what}`;
const reboot: StampedLine[] = [
  { ms: 700, line: "The system will reboot now!" },
  { ms: 1200, line: ok(`Stopped target ${ESC}[0;1;39mmulti-user.target${ESC}[0m - Multi-User System.`) },
  { ms: 9000, line: ok(`Reached target ${ESC}[0;1;39mreboot.target${ESC}[0m - System Reboot.`) },
  { ms: 10500, line: "[   66.011410] reboot: Restarting system" },
  { ms: 21500, line: `Probing EDD (edd=off to disable)... o${ESC}c${ESC}[?7l${ESC}[2J[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)` },
  { ms: 42100, line: "[    6.612843] Run /init as init process" },
  { ms: 42100, line: "Loading, please wait..." },
  { ms: 72000, line: `Welcome to ${ESC}[1mDebian GNU/Linux 12 (bookworm)${ESC}[0m!` },
  { ms: 90000, line: ok(`Reached target ${ESC}[0;1;39mmulti-user.target${ESC}[0m - Multi-User System.`) },
];

describe("rebootPhases", () => {
  it("splits a reboot at the landmarks, in host ms; the old boot's multi-user line is not the new boot's", () => {
    expect(rebootPhases(reboot, 97000)).toEqual({
      shutdownMs: 10500,
      firmwareMs: 11000,
      kernelMs: 20600,
      initramfsMs: 29900,
      userspaceMs: 18000,
      sshMs: 7000,
      jobWaits: [],
    });
  });

  it("names the unit systemd waited on (once, whatever the spinner showed)", () => {
    const waits = [
      { ms: 3000, line: ` ${ESC}[0;1;31m*${ESC}[0m] A stop job is running for kvmnet-dnsmasq-lab.service (5s / 10s)` },
      { ms: 4000, line: ` ${ESC}[0;1;31m*${ESC}[0m] A stop job is running for kvmnet-dnsmasq-lab.service (6s / 10s)` },
      { ms: 50000, line: `[${ESC}[0;1;31m*${ESC}[0m] A start job is running for /dev/vda (12s / 1min 30s)` },
    ];
    expect(
      rebootPhases(
        [...reboot, ...waits].sort((a, b) => a.ms - b.ms),
        97000,
      ).jobWaits,
    ).toEqual(["A stop job is running for kvmnet-dnsmasq-lab.service", "A start job is running for /dev/vda"]);
  });

  it("leaves out a phase whose landmark never showed and counts the next one from the last seen", () => {
    const noWelcome = reboot.filter((l) => !l.line.includes("Welcome"));
    expect(rebootPhases(noWelcome, 97000)).toMatchObject({ kernelMs: 20600, userspaceMs: 47900, sshMs: 7000 });
    expect(rebootPhases(noWelcome, 97000).initramfsMs).toBeUndefined();
  });
});

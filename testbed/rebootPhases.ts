/**
 * Where the time of a lab reboot goes, from the guest's serial console as the
 * host saw it arrive (testbed/labHost.ts stamps each new serial line with the
 * host's clock while it waits for the new boot).
 *
 * Why host stamps and not the guest's own: `systemd-analyze` and the journal
 * count from the new kernel's start, so they say nothing about the old boot's
 * shutdown or the firmware, and under TCG a starved vCPU stretches every guest
 * phase alike (an RCU stall report of ~20 s in the initramfs was measured on
 * this 2-core machine while other guests ran beside ours), which only the host's
 * clock, set against the other phases, tells apart from a unit that waits for a
 * timeout. Lines such as "A stop job is running for …" / "A start job is
 * running for …" name the unit systemd is waiting on; they are kept verbatim.
 *
 * Pure: lines in, figures out (unit test: test/unit/testbed/rebootPhases.test.ts).
 */

/** One serial line and when (host ms since the reboot was asked for) it was read. */
export interface StampedLine {
  ms: number;
  line: string;
}

/** Milliseconds between consecutive landmarks; a phase whose landmark never showed is absent. */
export interface RebootPhases {
  /** Asked → the old kernel's "reboot: Restarting system" (all of the old boot's shutdown). */
  shutdownMs?: number;
  /** → the new kernel's "Linux version" banner (reset, SeaBIOS, loading -kernel/-initrd). */
  firmwareMs?: number;
  /** → "Run /init" (kernel initialisation). */
  kernelMs?: number;
  /** → systemd of the root filesystem says "Welcome" (initramfs: its udev, root mount). */
  initramfsMs?: number;
  /** → "Reached target multi-user.target" (the root filesystem's boot transaction). */
  userspaceMs?: number;
  /** → the harness's first SSH command of the new boot (eth0 up, sshd, the probe's own polling). */
  sshMs?: number;
  /** "A stop job is running …" / "A start job is running …" lines: systemd waiting on a unit. */
  jobWaits: string[];
}

/** In the order they appear during a reboot. */
const LANDMARKS = [
  ["shutdownMs", /reboot: Restarting system/],
  ["firmwareMs", /Linux version \d/],
  ["kernelMs", /Run \/init as init process/],
  ["initramfsMs", /Welcome to .*Linux|systemd\[1\]: systemd \d+\S* running in system mode/],
  ["userspaceMs", /Reached target .*multi-user\.target/],
] as const;

// eslint-disable-next-line no-control-regex
const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

/**
 * The phases of one reboot: `lines` from the moment it was asked for (ms 0),
 * `sshMs` when the new boot answered. Each landmark is searched only after the
 * previous one, so the old boot's "Stopped target multi-user.target" or its
 * last lines cannot stand in for the new boot's.
 */
export function rebootPhases(lines: StampedLine[], sshAtMs: number): RebootPhases {
  const out: RebootPhases = { jobWaits: [] };
  let from = 0;
  let prevMs = 0;
  for (const [key, re] of LANDMARKS) {
    const i = lines.findIndex((l, j) => j >= from && re.test(stripAnsi(l.line)));
    if (i < 0) continue;
    out[key] = lines[i].ms - prevMs;
    prevMs = lines[i].ms;
    from = i + 1;
  }
  out.sshMs = sshAtMs - prevMs;
  const waits = new Set<string>();
  for (const l of lines) {
    // "A stop job is running for X (5s / 10s)": X, without the spinner's clock.
    const m = /A (stop|start) job is running for (.*?)(?: \(\d[^)]*\))?\s*$/.exec(stripAnsi(l.line));
    if (m) waits.add(`A ${m[1]} job is running for ${m[2]}`);
  }
  out.jobWaits = [...waits];
  return out;
}

/**
 * Collects the serial console's new lines, stamped with the host clock, from
 * the moment it is started. Reads the file every `everyMs` (the guest writes
 * it through qemu's `-serial file:`, unbuffered). `stop()` returns the lines.
 */
export function stampSerial(read: () => string, everyMs = 200): { stop(): StampedLine[] } {
  const t0 = Date.now();
  let offset = read().length;
  let partial = "";
  const lines: StampedLine[] = [];
  const poll = () => {
    const text = read();
    if (text.length < offset) offset = 0; // replaced file: read it from the start
    partial += text.slice(offset);
    offset = text.length;
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    const ms = Date.now() - t0;
    for (const line of parts) lines.push({ ms, line });
  };
  const timer = setInterval(poll, everyMs);
  return {
    stop() {
      clearInterval(timer);
      poll();
      if (partial) lines.push({ ms: Date.now() - t0, line: partial });
      return lines;
    },
  };
}

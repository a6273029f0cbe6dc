/**
 * The hostile values the fault campaign tries in every string field, and the
 * seeded generator that picks them.
 *
 * A value that could run a command carries a canary path of its own
 * (`/tmp/kvmnet-canary-<run>-<n>`): if any shell on the host (or on this
 * machine) ever runs it, the file appears and names the exact value and field.
 * A value that could inject a line into a file another program reads (systemd
 * units, dnsmasq config, nft rulesets, networkd files) carries the same marker
 * on the injected line, so a host file with a line starting with it is found.
 */
import { UNKNOWN } from "../../provider/validate";
import { HOSTILE_STRINGS } from "../../testbed/hostile";

/** Deterministic PRNG (mulberry32): the same seed gives the same campaign. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates with the given PRNG (a copy). */
export function shuffled<T>(xs: readonly T[], rnd: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Prefix of every canary file; the campaign looks for it on the host and here. */
export const CANARY_PREFIX = "/tmp/kvmnet-canary-";

/**
 * A value template: `C` is replaced with the trial's canary path, `M` with its
 * marker word (the file name without /tmp/).
 */
interface Template {
  /** Short label for reports. */
  label: string;
  make(canary: string, marker: string): string;
}

const t = (label: string, make: (c: string, m: string) => string): Template => ({ label, make });

/** Values that would run a command or inject a line if they reached a shell or config file unquoted. */
const CANARY_TEMPLATES: Template[] = [
  t("$(touch)", (c) => `$(touch ${c})`),
  t("`touch`", (c) => `\`touch ${c}\``),
  t(";touch", (c) => `;touch ${c}`),
  t("x;touch;", (c) => `x;touch ${c};`),
  t("x|touch", (c) => `x|touch ${c}`),
  t("x&&touch", (c) => `x&&touch ${c}`),
  t("x||touch", (c) => `x||touch ${c}`),
  t("x&touch", (c) => `x&touch ${c}&`),
  t("x\\ntouch", (c) => `x\ntouch ${c}`),
  t("x\\rtouch", (c) => `x\rtouch ${c}`),
  t("'$(touch)'", (c) => `'$(touch ${c})'`),
  t('"$(touch)"', (c) => `"$(touch ${c})"`),
  t("x';touch;'", (c) => `x'; touch ${c}; '`),
  t('x";touch;"', (c) => `x"; touch ${c}; "`),
  t("${IFS}touch", (c) => `x;touch\${IFS}${c}`),
  t("$(touch) in a DNS-ish name", (c) => `a$(touch${"${IFS}"}${c})b`),
  t("\\ntouch (ifupdown up line)", (c) => `br0\n    up touch ${c}`),
  t("systemd ExecStart", (c) => `x\nExecStart=/bin/touch ${c}`),
  t("systemd ExecStartPre", (c) => `x\n[Service]\nExecStartPre=/bin/touch ${c}`),
  t("dnsmasq dhcp-script", (_c, m) => `x\ndhcp-script=/tmp/${m}.sh`),
  t("dnsmasq conf-file", (c, m) => `x\nconf-file=/tmp/${m}.conf`),
  t("dnsmasq address=", (_c, m) => `x\naddress=/${m}/10.0.0.66`),
  t("dnsmasq ,ignore", (_c, m) => `${m},ignore`),
  t("dnsmasq ,set:tag", (_c, m) => `${m},set:evil`),
  t("nft comment escape", (c) => `x" ; add table ip kvmnet_canary ; # ${c}`),
  t("nft }; rule", (c) => `x } ; add table ip kvmnet_canary ; # ${c}`),
  t("networkd [Match]", (_c, m) => `x\n[Match]\nName=${m}`),
  t("NM keyfile [connection]", (_c, m) => `x\n[connection]\nid=${m}`),
  t("sysctl line", (_c, m) => `x\nnet.ipv4.ip_forward=1 # ${m}`),
  t("udev RUN+=", (c) => `x", RUN+="/bin/touch ${c}`),
  t("backslash-$(touch)", (c) => `\\$(touch ${c})`),
  t("printf %s $(touch)", (c) => `%s$(touch ${c})%n`),
  t("description-ok $(touch)", (c) => `web $(touch ${c}) ; rm -rf / | cat`),
  t("leading dot + touch", (c) => `.x;touch ${c}`),
];

/** Values that need no canary: shapes that mean something to a parser, sizes, bytes. */
const PLAIN_VALUES: string[] = [
  ...HOSTILE_STRINGS,
  UNKNOWN,
  "ignore",
  "infinite",
  "IGNORE",
  "3600",
  "12h",
  "0x0a.0x01",
  "10.66.0.77",
  "127.0.0.1",
  "0.0.0.0",
  "255.255.255.255",
  "224.0.0.1",
  "010.070.000.010",
  "10.70.0.0/24",
  "1.2.3.4/33",
  "::1",
  "fe80::1/64",
  "::ffff:10.0.0.1/120",
  "lo",
  "all",
  "default",
  "bonding_masters",
  "eth0",
  "kvn-fz",
  "x-port-y",
  "-x",
  "--",
  "x".repeat(15),
  "x".repeat(16),
  "a".repeat(63),
  "a".repeat(64),
  `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`,
  "y".repeat(5000),
  "z".repeat(70000),
  "x\0y",
  "\0",
  "x\u202ey",
  "e\u0301",
  "ＡＢＣ",
  "x\u2028y",
  "x\ufeff",
  "\ud800",
  "tcp ",
  "TCP",
  "udp\n",
  "nat\0",
  "runtime ",
  "auto\n",
  "vfio-pci\n",
  "802.1q",
  "52:54:00:AA:00:01",
  "53:54:00:aa:00:01",
  "00:00:00:00:00:00",
  "52-54-00-aa-00-01",
  "18080-18081 ",
  "0-65535",
  "65535-65536",
  "80-79",
  "0080",
  "0000:00:03.0\n",
  "0000:00:20.0",
  "../../../../dev/sda",
  "/etc/shadow",
  "~/.ssh/id_rsa",
  "/dev/null",
  "~root/x",
  "SHA256:",
  "ssh-ed25519 AAAA\nssh-rsa AAAA",
  "root",
  "nobody",
  "r00t$",
  "lab.test.",
  "-lab.test",
  "lab..test",
  "xn--nxasmq6b",
  "web.lab.test",
  "WEB",
  "localhost",
];

/** One value of the pool: the literal text for a trial number, and its label. */
export interface PoolValue {
  label: string;
  /** Does this value carry a canary (the trial's number is in it)? */
  canary: boolean;
  make(trial: number): string;
}

/** The whole pool for run `run` (canary paths carry the run tag). */
export function valuePool(run: string): PoolValue[] {
  const plain = [...new Set(PLAIN_VALUES)].map((v): PoolValue => ({
    label: JSON.stringify(v.length > 40 ? `${v.slice(0, 20)}…(${v.length} chars)` : v),
    canary: false,
    make: () => v,
  }));
  const canaries = CANARY_TEMPLATES.map((tpl): PoolValue => ({
    label: tpl.label,
    canary: true,
    make: (trial) => tpl.make(`${CANARY_PREFIX}${run}-${trial}`, `kvmnet-canary-${run}-${trial}`),
  }));
  return [...canaries, ...plain];
}

/** The canary trial number in a file name, or undefined. */
export function canaryTrial(name: string, run: string): number | undefined {
  const m = new RegExp(`kvmnet-canary-${run}-(\\d+)`).exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * `npm run demo`: the README's main job on a local sandbox host.
 *
 * Installs the system packages it lacks (Debian/Ubuntu, as root; otherwise it
 * prints the one command that does and changes nothing), starts one sandbox
 * host (a network namespace with its own sshd) and its upstream LAN, runs
 * `pulumi up` of the root project (examples/quickstart: a NAT network with a
 * pinned lease and a port forward) against it with a local file backend, then
 * shows it working from outside: a guest plugged into the network's bridge
 * gets its lease by DHCP, and a client on the upstream LAN reaches the guest's
 * port 443 through the host's port 8443. It checks that a second preview has
 * nothing to do, destroys, and shows that nothing is left. Ctrl-C at any
 * point removes everything it made (the sandbox host goes with all it holds).
 */
import { execFileSync, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { assertSandboxSupported, startFleet } from "../testbed/fleet";
import { dhcpLease, Listeners, talk } from "../testbed/guests";

const REPO = path.resolve(__dirname, "..");

function say(msg: string): void {
  process.stdout.write(`\n\u001b[1m== ${msg}\u001b[0m\n`);
}

function pulumiBin(): string {
  try {
    const out = execFileSync("bash", [path.join(REPO, "scripts", "install-pulumi.sh")], { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
    return out.trim().split("\n").pop() ?? "";
  } catch {
    console.error(
      "\nThe Pulumi CLI is not installed and could not be built here.\n" +
        "Install it (https://www.pulumi.com/docs/install/) and put it on PATH, or install Go 1.25+ so\n" +
        "scripts/install-pulumi.sh can build it, then run `npm run demo` again.",
    );
    process.exit(1);
  }
}

function pulumi(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn("pulumi", args, { cwd: REPO, env, stdio: [input === undefined ? "ignore" : "pipe", "inherit", "inherit"] });
    if (input !== undefined) child.stdin?.end(input);
    child.on("exit", (code) => resolve(code ?? 1));
  });
}

/** Commands the demo runs, and the Debian package that has each. */
const NEEDED: [command: string, pkg: string][] = [
  ["/usr/sbin/sshd", "openssh-server"],
  ["ssh-keygen", "openssh-client"],
  ["nft", "nftables"],
  ["dnsmasq", "dnsmasq-base"],
  ["ip", "iproute2"],
  ["nsenter", "util-linux"],
  ["busybox", "busybox"],
  ["socat", "socat"],
];

const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;

/** Install what is missing with apt-get, saying what; or print the command and exit before anything changed. */
function ensurePackages(): void {
  const missing = [...new Set(NEEDED.filter(([cmd]) => !has(cmd)).map(([, pkg]) => pkg))];
  if (missing.length === 0) return;
  const command = `apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  if (!has("apt-get")) {
    console.error(`npm run demo needs: ${missing.join(", ")} (Debian package names). Install them, then run it again.`);
    process.exit(1);
  }
  say(`installing ${missing.join(" ")} (apt-get)`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  if (spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit", env }).status !== 0 || spawnSync("sh", ["-c", command], { stdio: "inherit", env }).status !== 0) {
    console.error(`\ninstalling failed; run as root:\n  apt-get update && ${command}\nthen npm run demo again.`);
    process.exit(1);
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("npm run demo needs root: it creates a network namespace with its own sshd (run it with sudo, or as root).");
    process.exit(1);
  }
  say("system packages");
  ensurePackages();
  await assertSandboxSupported();
  say("Pulumi CLI");
  const bin = pulumiBin();
  if (!fs.existsSync(path.join(REPO, "dist", "provider", "index.js"))) {
    say("building pulumi-kvmnet");
    execFileSync("npm", ["run", "build"], { cwd: REPO, stdio: "inherit" });
  }

  say("starting a sandbox KVM host (netns + sshd) and its upstream LAN");
  const fleet = await startFleet(1);
  const host = fleet.hosts[0];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-demo-"));
  const listeners = new Listeners();
  // Ctrl-C: the sandbox host's own exit handlers remove it with everything in it; the state dir goes here.
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      console.error(`\n${sig}: removing the sandbox host and the demo's state`);
      fs.rmSync(work, { recursive: true, force: true });
      void fleet.stop().finally(() => process.exit(130));
    });
  }
  fs.mkdirSync(path.join(work, "backend"));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${bin}:${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`,
    PULUMI_HOME: path.join(work, "home"),
    PULUMI_BACKEND_URL: `file://${path.join(work, "backend")}`,
    PULUMI_CONFIG_PASSPHRASE: "kvmnet-demo",
    PULUMI_SKIP_UPDATE_CHECK: "true",
  };
  const stackArgs = ["--stack", "demo", "--non-interactive", "--config-file", path.join(work, "Pulumi.demo.yaml")];
  let failed = false;
  try {
    console.log(`host ${host.address}, host key ${host.hostKeyFingerprint}`);
    const must = async (args: string[], input?: string) => {
      const code = await pulumi(args, env, input);
      if (code !== 0) throw new Error(`pulumi ${args[0]} ${args[1] ?? ""} exited ${code}`);
    };
    await must(["stack", "init", "--stack", "demo", "--non-interactive"]);
    await must(["config", "set", "host", ...stackArgs], host.address);
    await must(["config", "set", "hostKey", ...stackArgs], host.hostKeyFingerprint);
    await must(["config", "set", "--secret", "sshKey", ...stackArgs], host.privateKey);

    say("pulumi up");
    await must(["up", "--yes", ...stackArgs]);

    say("what the host has now");
    const show = [
      "echo '$ ip -br addr show kvn-lab'; ip -br addr show kvn-lab",
      "echo; echo '$ nft list tables'; nft list tables",
      "echo; echo '$ nft list table ip kvmnet_pf_tcp_any_8443'; nft list table ip kvmnet_pf_tcp_any_8443",
      "echo; echo '$ cat /run/kvmnet/nat/lab/dnsmasq.pid; sysctl net.ipv4.ip_forward'; cat /run/kvmnet/nat/lab/dnsmasq.pid; sysctl net.ipv4.ip_forward",
    ];
    process.stdout.write((await host.exec(show.join("; "))).stdout);

    say("a guest on the network: its NIC plugged into kvn-lab (as a hypervisor plugs a VM's tap), DHCP");
    const guest = await fleet.addGuest(host, "vnet0");
    await guest.exec("ip link set dev eth0 address 52:54:00:00:00:10");
    await host.exec("ip link set dev vnet0 master kvn-lab");
    const lease = await dhcpLease(guest.exec);
    console.log(`guest 52:54:00:00:00:10 got ${lease || "NO LEASE"} from the network's dnsmasq (pinned in the program: 192.168.122.10)`);
    if (lease !== "192.168.122.10") failed = true;

    say(`a client on the upstream LAN (${fleet.upstream.address}) → host ${host.uplinkAddress}:8443 → guest :443`);
    await listeners.serve(guest.exec, "TCP-LISTEN:443");
    const reply = await talk(fleet.upstream.exec, "tcp", `${host.uplinkAddress}:8443`, "hello-from-upstream");
    process.stdout.write(reply ? `${reply.trimEnd().replace(/^/gm, "  guest answered: ")}\n` : "  NO ANSWER\n");
    if (!reply.includes("hello-from-upstream")) failed = true;
    await listeners.stopAll();
    await host.exec("ip link set dev vnet0 nomaster");

    say("pulumi preview --expect-no-changes");
    await must(["preview", "--expect-no-changes", ...stackArgs]);

    say("pulumi destroy");
    await must(["destroy", "--yes", ...stackArgs]);
    const left = (
      await host.exec("ip -br link show kvn-lab 2>/dev/null; nft list tables | grep kvmnet_; sysctl -n net.ipv4.ip_forward | grep -x 1", { allowFail: true })
    ).stdout.trim();
    const gone = left === "";
    console.log(gone ? "Nothing of ours is left on the host (bridge, nft tables, ip_forward restored)." : `STILL on the host:\n${left}`);
    if (!gone) failed = true;
    const after = await talk(fleet.upstream.exec, "tcp", `${host.uplinkAddress}:8443`, "after-destroy");
    console.log(after === "" ? "And the upstream client's connection to :8443 is refused now." : `STILL forwarded: ${after}`);
    if (after !== "") failed = true;
  } catch (e) {
    console.error(`\ndemo failed: ${(e as Error).message}`);
    failed = true;
  } finally {
    await listeners.stopAll();
    say("cleaning up the sandbox host");
    await pulumi(["stack", "rm", "--yes", "--force", "--stack", "demo", "--non-interactive"], env);
    await fleet.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
  say(failed ? "demo FAILED" : "demo done: nothing of it is left on this machine");
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

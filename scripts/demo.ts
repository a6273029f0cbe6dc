/**
 * `npm run demo`: the README's main job on a local sandbox host.
 *
 * Starts one sandbox host (a network namespace with its own sshd), runs
 * `pulumi up` of the root project (examples/quickstart) against it with a
 * local file backend, shows what was made on the host, checks that a second
 * preview has nothing to do, then destroys and removes everything it made.
 */
import { execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { assertSandboxSupported, startFleet } from "../test/sandbox/fleet";

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

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("npm run demo needs root: it creates a network namespace with its own sshd (run it with sudo, or as root).");
    process.exit(1);
  }
  await assertSandboxSupported();
  say("Pulumi CLI");
  const bin = pulumiBin();
  if (!fs.existsSync(path.join(REPO, "dist", "provider", "index.js"))) {
    say("building pulumi-kvmnet");
    execFileSync("npm", ["run", "build"], { cwd: REPO, stdio: "inherit" });
  }

  say("starting a sandbox KVM host (netns + sshd)");
  const fleet = await startFleet(1);
  const host = fleet.hosts[0];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-demo-"));
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

    say("pulumi preview --expect-no-changes");
    await must(["preview", "--expect-no-changes", ...stackArgs]);

    say("pulumi destroy");
    await must(["destroy", "--yes", ...stackArgs]);
    const left = (await host.exec("ip -br link show kvn-lab 2>/dev/null; nft list tables | grep kvmnet_; sysctl -n net.ipv4.ip_forward | grep -x 1", { allowFail: true })).stdout.trim();
    const gone = left === "";
    console.log(gone ? "Nothing of ours is left on the host (bridge, nft tables, ip_forward restored)." : `STILL on the host:\n${left}`);
    if (!gone) failed = true;
  } catch (e) {
    console.error(`\ndemo failed: ${(e as Error).message}`);
    failed = true;
  } finally {
    say("cleaning up the sandbox host");
    await pulumi(["stack", "rm", "--yes", "--force", "--stack", "demo", "--non-interactive"], env);
    await fleet.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

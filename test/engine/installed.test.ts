/**
 * pulumi-kvmnet as a user installs it: the packed package (`npm pack`, exactly
 * what the registry would serve) in a fresh project outside the repo, with
 * `npm install` on Node 22 and the LOWEST @pulumi/pulumi that the package's
 * peerDependencies allow, under the real CLI — the other end of what we claim
 * (the suite itself runs on Node 24 with the newest @pulumi/pulumi). The
 * program is examples/libvirt-default; it reports the Node and SDK versions it
 * ran on, and the host is judged before and after.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { assertSandboxSupported, Fleet, SandboxHost, snapshotHost, startFleet } from "../../testbed/fleet";
import { ensurePulumi, REPO, run, Stack } from "../../testbed/engine";

jest.setTimeout(900_000);

const NODE_VERSION = "22.23.5";
const pkg = JSON.parse(fs.readFileSync(path.join(REPO, "package.json"), "utf8")) as { version: string; peerDependencies: Record<string, string>; engines: Record<string, string> };
/** The lowest version a `^x.y.z` peer range allows. */
const lowestSdk = /^\^(\d+\.\d+\.\d+)$/.exec(pkg.peerDependencies["@pulumi/pulumi"])?.[1];

let fleet: Fleet;
let h: SandboxHost;
let stack: Stack;
let work: string;
let nodeBin: string;

async function ok(file: string, args: string[], opts: Parameters<typeof run>[2]) {
  const r = await run(file, args, { timeoutMs: 600_000, ...opts });
  if (r.code !== 0) throw new Error(`${file} ${args.join(" ")} exited ${r.code}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  return r;
}

beforeAll(async () => {
  await assertSandboxSupported();
  expect(lowestSdk).toBeDefined();
  const bin = await ensurePulumi();
  nodeBin = (await ok("bash", [path.join(REPO, "scripts", "install-node.sh")], { env: { ...process.env, KVMNET_NODE_VERSION: NODE_VERSION } })).stdout.trim().split("\n").pop()!;
  work = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-installed-"));
  const env = { ...process.env, PATH: `${nodeBin}:${process.env.PATH}` };
  const packed = (await ok("npm", ["pack", "--silent", "--pack-destination", work], { cwd: REPO, env })).stdout.trim().split("\n").pop()!;
  const project = path.join(work, "project");
  fs.mkdirSync(project);
  fs.copyFileSync(path.join(REPO, "examples", "libvirt-default", "index.ts"), path.join(project, "index.ts"));
  fs.appendFileSync(
    path.join(project, "index.ts"),
    '\nexport const nodeVersion = process.version;\nexport const sdkVersion: string = require("@pulumi/pulumi/package.json").version;\n',
  );
  fs.writeFileSync(path.join(project, "Pulumi.yaml"), "name: installed\nruntime: nodejs\nmain: index.ts\n");
  fs.writeFileSync(
    path.join(project, "package.json"),
    JSON.stringify({ name: "installed", private: true, dependencies: { "pulumi-kvmnet": `file:../${packed}`, "@pulumi/pulumi": lowestSdk } }, null, 2),
  );
  await ok("npm", ["install", "--no-audit", "--no-fund", "--engine-strict"], { cwd: project, env });
  fleet = await startFleet(1);
  [h] = fleet.hosts;
  stack = new Stack(project, "installed", bin);
  stack.env.PATH = `${nodeBin}:${stack.env.PATH}`;
  await stack.init();
  await stack.connectTo(h);
  // Sandbox hosts have no libvirtd (test/lab/libvirt.engine.test.ts runs the registration).
  await stack.setConfig("libvirt", "false");
});

afterAll(async () => {
  await stack?.pulumi(["destroy", "--yes"]);
  await stack?.dispose();
  await fleet?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

it(`installs from the packed package and runs on Node ${NODE_VERSION} with the lowest @pulumi/pulumi allowed`, async () => {
  const before = await snapshotHost(h);
  await stack.ok(["up", "--yes"]);
  const out = JSON.parse((await stack.ok(["stack", "output", "--json"])).stdout) as Record<string, unknown>;
  expect(out).toMatchObject({ nodeVersion: `v${NODE_VERSION}`, sdkVersion: lowestSdk, bridge: "virbr0", gateway: "192.168.122.1" });
  const tables = (await h.exec("nft list tables")).stdout;
  for (const t of ["kvmnet_nat_default", "kvmnet_pf_tcp_any_8443", "kvmnet_pf_udp_any_5353"]) expect(tables).toContain(t);
  await stack.ok(["preview", "--expect-no-changes"]);
  await stack.ok(["destroy", "--yes"]);
  expect(await snapshotHost(h)).toEqual(before);
});

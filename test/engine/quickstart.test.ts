/**
 * The root project (examples/quickstart: NatNetwork + PortForward) under the
 * real Pulumi engine against a sandbox host: docs/TESTING.md's P1, P2, P4–P9 for
 * both kinds. (P3, adoption, does not apply: neither kind adopts.)
 */
import { SandboxHost, snapshotHost } from "../../testbed/fleet";
import { REPO, Stack } from "../../testbed/engine";
import { exampleOnSandboxHost } from "../support/drive";

jest.setTimeout(900_000);

const NAT = "pulumi-nodejs:dynamic/kvmnet:NatNetwork";
const PF = "pulumi-nodejs:dynamic/kvmnet:PortForward";

let h: SandboxHost;
let stack: Stack;

exampleOnSandboxHost(
  {
    project: REPO,
    stackName: "engine-quickstart",
  },
  (host, s) => {
    h = host;
    stack = s;
  },
);

const tables = async () => (await h.exec("nft list tables")).stdout;
const resources = (doc: { deployment: { resources?: { type: string; outputs?: Record<string, unknown> }[] } }, type: string) =>
  (doc.deployment.resources ?? []).filter((r) => r.type === type);

it("runs NatNetwork and PortForward through their whole life under the engine", async () => {
  const before = await snapshotHost(h);

  // P1: up, then nothing to do.
  const accepted = h.acceptedConnections();
  await stack.ok(["up", "--yes"]);
  expect(h.acceptedConnections() - accepted).toBe(1);
  // Created at once (the program has no dependsOn), so in either order.
  expect(await tables()).toMatch(/table inet kvmnet_nat_lab\n/);
  expect(await tables()).toMatch(/table ip kvmnet_pf_tcp_any_8443\n/);
  expect((await h.exec("sysctl -n net.ipv4.ip_forward")).stdout.trim()).toBe("1");
  await stack.ok(["preview", "--expect-no-changes"]);
  await stack.ok(["up", "--yes", "--expect-no-changes"]);
  await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

  // P6: a mode change is an in-place update of exactly that field; a port change replaces the forward.
  await stack.setConfig("mode", "isolated");
  const modeSteps = (await stack.previewSteps()).filter((s) => s.op !== "same");
  expect(modeSteps).toEqual([{ op: "update", type: NAT, name: "lab", changedInputs: ["mode"] }]);
  await stack.ok(["up", "--yes"]);
  expect((await h.exec("nft list table inet kvmnet_nat_lab")).stdout).not.toMatch(/comment "kvmnet:masquerade"/);
  await stack.ok(["preview", "--expect-no-changes"]);
  await stack.setConfig("mode", "nat");
  await stack.setConfig("httpsPort", "9443");
  const portSteps = (await stack.previewSteps()).filter((s) => s.op !== "same");
  expect(portSteps.map((s) => [s.op, s.type, s.name])).toEqual(
    expect.arrayContaining([
      ["update", NAT, "lab"],
      ["replace", PF, "web-https"],
    ]),
  );
  await stack.ok(["up", "--yes"]);
  expect(await tables()).toMatch(/kvmnet_pf_tcp_any_9443/);
  expect(await tables()).not.toMatch(/kvmnet_pf_tcp_any_8443/);
  expect((await h.exec("nft list table inet kvmnet_nat_lab")).stdout).toMatch(/comment "kvmnet:masquerade"/);
  await stack.ok(["preview", "--expect-no-changes"]);

  // P5: the forward deleted by hand → refresh drops it → up recreates it.
  await h.exec("nft delete table ip kvmnet_pf_tcp_any_9443");
  const refreshed = await stack.ok(["refresh", "--yes"]);
  expect(refreshed.stdout).toMatch(/web-https\s+deleted/);
  expect(resources((await stack.exportState()).doc, PF)).toEqual([]);
  await stack.ok(["up", "--yes"]);
  expect(await tables()).toMatch(/kvmnet_pf_tcp_any_9443/);

  // P2: the network's table deleted and dnsmasq killed by hand → refresh shows drift → up repairs.
  const pid = (await h.exec("cat /run/kvmnet/nat/lab/dnsmasq.pid")).stdout.trim();
  await h.exec(`nft delete table inet kvmnet_nat_lab && kill ${pid}`);
  expect((await stack.pulumi(["refresh", "--yes", "--expect-no-changes"])).code).not.toBe(0);
  const repairSteps = (await stack.previewSteps()).filter((s) => s.op !== "same");
  expect(repairSteps.map((s) => [s.op, s.name])).toEqual([["update", "lab"]]);
  await stack.ok(["up", "--yes"]);
  expect(await tables()).toMatch(/table inet kvmnet_nat_lab/);
  const newPid = (await h.exec("cat /run/kvmnet/nat/lab/dnsmasq.pid")).stdout.trim();
  expect(newPid).not.toBe(pid);
  expect((await h.exec(`cat /proc/${newPid}/comm`)).stdout.trim()).toBe("dnsmasq");
  await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

  // P9: invalid input fails at preview naming the field; nothing reaches the host.
  await stack.setConfig("httpsPort", "70000");
  const acceptedBefore = h.acceptedConnections();
  const bad = await stack.pulumi(["preview"]);
  expect(bad.code).not.toBe(0);
  expect(bad.stdout + bad.stderr).toMatch(/kvmnet:PortForward[\s\S]*web-https[\s\S]*hostPort/);
  expect(h.acceptedConnections()).toBe(acceptedBefore);
  await stack.setConfig("httpsPort", "9443");

  // P8: no plaintext key in state; P7: export | import round-trips.
  const { exported, plainBefore, reimported } = await stack.exportImport();
  for (const line of h.privateKey.split("\n").filter((l) => l && !l.startsWith("-----"))) expect(exported.text).not.toContain(line);
  for (const type of [NAT, PF]) {
    expect(resources(reimported.doc, type)).toEqual(resources(plainBefore.doc, type));
    expect(resources(reimported.doc, type)).toHaveLength(1);
  }
  await stack.ok(["preview", "--expect-no-changes"]);

  // P4: destroy leaves the host as it was (ip_forward restored, dnsmasq gone, files removed).
  await stack.ok(["destroy", "--yes"]);
  expect(await snapshotHost(h)).toEqual(before);
  // The dnsmasq we saw is gone (or a zombie awaiting the sandbox's non-reaping pid 1).
  const state = (await h.exec(`cut -d' ' -f3 /proc/${newPid}/stat 2>/dev/null || echo gone`)).stdout.trim();
  expect(["gone", "Z"]).toContain(state);
});

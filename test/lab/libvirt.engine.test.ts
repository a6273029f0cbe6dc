/**
 * libvirt registration on a real libvirtd, under the real engine: the lab
 * guest runs libvirt as Debian ships it (scripts/lab-image.sh), with
 * libvirt's own `default` network running. The README's migration steps stop
 * it; examples/libvirt-default then gives the host the same network as a
 * NatNetwork registered in libvirt as `default` (adopting libvirt's
 * definition). Judged from libvirt's side: `virsh net-info`/`net-dumpxml`
 * match the resource, a diskless domain defined with the example's
 * `interfaceXml` output starts and its tap is a port of the bridge, an
 * out-of-band `net-undefine` is drift that refresh shows and up repairs, and
 * after destroy libvirt has its own definition back and nothing of ours.
 * `npm run build` first: the example loads dist/ through node_modules/pulumi-kvmnet.
 */
import * as path from "path";
import { ensurePulumi, REPO, Stack } from "../../testbed/engine";
import { bootLabHost, checkLabSupport, LabHost } from "../../testbed/labHost";

jest.setTimeout(30 * 60_000);

const NAT_TYPE = "pulumi-nodejs:dynamic/kvmnet:NatNetwork";
/** virsh and nested QEMU are slow under TCG: libvirtd's first start probes QEMU's capabilities. */
const SLOW = { timeoutMs: 300_000 };

let lab: LabHost;
let stack: Stack;

beforeAll(async () => {
  checkLabSupport();
  const bin = await ensurePulumi();
  lab = await bootLabHost();
  stack = new Stack(path.join(REPO, "examples", "libvirt-default"), `lab-libvirt-${process.pid}`, bin);
  await stack.init();
  await stack.connectTo(lab);
});

afterAll(async () => {
  await lab?.exec("virsh -q destroy kvmnet-probe; virsh -q undefine kvmnet-probe; true", { allowFail: true, ...SLOW }).catch(() => undefined);
  await stack?.pulumi(["destroy", "--yes"]);
  await stack?.dispose();
  await lab?.shutdown();
});

const virsh = async (args: string, allowFail = false) => (await lab.exec(`virsh -q -c qemu:///system ${args}`, { allowFail, ...SLOW })).stdout;

/** `virsh net-info default` as a record ("Active" → "yes"), or undefined when there is no such network. */
async function netInfo(): Promise<Record<string, string> | undefined> {
  const r = await lab.exec("virsh -q -c qemu:///system net-info default", { allowFail: true, ...SLOW });
  if (r.code !== 0) return undefined;
  return Object.fromEntries(
    r.stdout.split("\n").flatMap((l) => {
      const m = /^([^:]+):\s*(.*)$/.exec(l);
      return m ? [[m[1].trim(), m[2].trim()]] : [];
    }),
  );
}

type Doc = { deployment: { resources?: { type: string; urn: string; outputs?: Record<string, unknown> }[] } };
const natOuts = async () => ((await stack.exportState(true)).doc as Doc).deployment.resources?.find((r) => r.type === NAT_TYPE)?.outputs;

describe("examples/libvirt-default replaces libvirt's default network on a real libvirtd", () => {
  it("registers, attaches a domain, repairs drift and gives libvirt its own network back", async () => {
    // The host before: libvirt's own default network running (virbr0, its dnsmasq).
    await virsh("net-start default");
    const theirs = await netInfo();
    expect(theirs).toMatchObject({ Name: "default", Active: "yes" });
    const theirXml = await virsh("net-dumpxml --inactive default");
    expect(theirXml).toContain("<forward mode='nat'");

    // Adopting a running network is refused before anything changes: the README says to stop it first.
    const refused = await stack.pulumi(["up", "--yes"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout + refused.stderr).toMatch(/libvirt network default is active; adopting it needs it stopped[\s\S]*virsh net-destroy default/);
    expect(await netInfo()).toEqual(theirs);
    await stack.ok(["destroy", "--yes"]); // the forwards, created beside the refused network

    // The README's migration steps.
    await virsh("net-destroy default");
    await virsh("net-autostart --disable default");

    await stack.ok(["up", "--yes"]);
    const ours = await netInfo();
    expect(ours).toMatchObject({ Name: "default", Active: "yes", Autostart: "yes", Persistent: "yes", Bridge: "virbr0" });
    expect(ours?.UUID).not.toBe(theirs?.UUID);
    const xml = await virsh("net-dumpxml default");
    expect(xml).toContain("<forward mode='bridge'/>");
    expect(xml).toContain("<bridge name='virbr0'/>");
    expect((await virsh("net-list --name")).split("\n")).toContain("default");
    const outs = await natOuts();
    expect(outs).toMatchObject({ libvirt: { network: "default", autostart: true, adopt: true }, model: "virtio-net-pci" });
    expect(outs?.qemuNetdevArgs).toEqual(["-netdev", "bridge,id=net-virbr0,br=virbr0", "-device", "virtio-net-pci,netdev=net-virbr0"]);
    await stack.ok(["preview", "--expect-no-changes"]);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

    // A domain attaches by name with the output's XML; its tap is a port of the bridge.
    const interfaceXml = JSON.parse((await stack.ok(["stack", "output", "--json"])).stdout).interfaceXml as string;
    expect(interfaceXml).toBe("<interface type='network'>\n  <source network='default'/>\n  <model type='virtio'/>\n</interface>");
    const domain = [
      "<domain type='qemu'>",
      "  <name>kvmnet-probe</name>",
      "  <memory unit='MiB'>32</memory>",
      "  <vcpu>1</vcpu>",
      "  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>",
      "  <devices>",
      interfaceXml,
      "  </devices>",
      "</domain>",
    ].join("\n");
    await lab.exec("cat >/tmp/kvmnet-probe.xml && virsh -q -c qemu:///system define /tmp/kvmnet-probe.xml && virsh -q -c qemu:///system start kvmnet-probe", {
      input: domain,
      ...SLOW,
    });
    const tap = (await virsh("domiflist kvmnet-probe")).trim().split(/\s+/)[0];
    expect(tap).toMatch(/^vnet\d+$/);
    const ports = JSON.parse((await lab.exec("ip -j link show master virbr0")).stdout) as { ifname: string }[];
    expect(ports.map((p) => p.ifname)).toContain(tap);
    await virsh("destroy kvmnet-probe");
    await virsh("undefine kvmnet-probe");

    // Drift out of band: the network undefined behind our back.
    await virsh("net-destroy default");
    await virsh("net-undefine default");
    expect((await stack.pulumi(["refresh", "--yes", "--expect-no-changes"])).code).not.toBe(0);
    expect((await natOuts())?.libvirt).toBeUndefined();
    const repair = (await stack.previewSteps()).filter((s) => s.op !== "same");
    expect(repair).toEqual([{ op: "update", type: NAT_TYPE, name: "default", changedInputs: ["libvirt"] }]);
    await stack.ok(["up", "--yes"]);
    expect(await netInfo()).toEqual(ours);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

    // Destroy: libvirt's own definition is back as it was stopped, and nothing of ours is left.
    await stack.ok(["destroy", "--yes"]);
    expect(await netInfo()).toEqual({ ...theirs, Active: "no", Autostart: "no", Bridge: "virbr0" });
    expect(await virsh("net-dumpxml --inactive default")).toBe(theirXml);
    expect((await virsh("net-list --all --uuid")).split("\n").filter(Boolean)).toEqual([theirs?.UUID]);
    expect((await lab.exec("ls -A /etc/kvmnet/libvirt", { allowFail: true })).code).not.toBe(0);
  });
});

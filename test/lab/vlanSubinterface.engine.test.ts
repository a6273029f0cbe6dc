/**
 * The real Pulumi engine running examples/vlan-trunk (VLANs 10 and 20 on one
 * trunk NIC, each a port of its own Bridge) against the lab VM: P1–P9 of
 * docs/TESTING.md.
 *
 * All nine apply. P3 (adoption) is shown by dropping a VLAN from the state
 * (`pulumi state delete`) and taking it back with `adopt`; P9's "nothing
 * reaches the host" is counted in the guest's sshd log, since a lab host has
 * no accept counter of its own. `npm run build` first: the example loads
 * dist/ through node_modules/pulumi-kvmnet.
 */
import * as path from "path";
import { ensurePulumi, REPO, Stack } from "../../testbed/engine";
import { bootLabHost, checkLabSupport, LabHost } from "../../testbed/labHost";
import { labSnapshot } from "./labSnapshot";
import { labLink } from "./persistSupport";

jest.setTimeout(30 * 60_000);

const VLAN_TYPE = "pulumi-nodejs:dynamic/kvmnet:VlanSubinterface";

let lab: LabHost;
let stack: Stack;
/** The trunk: the guest's backend-less virtio NIC, which nothing else uses. */
let trunk: string;

beforeAll(async () => {
  checkLabSupport();
  const bin = await ensurePulumi();
  lab = await bootLabHost();
  const links = JSON.parse((await lab.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
  trunk = links.find((l) => l.address === lab.macs.virtio)!.ifname;
  stack = new Stack(path.join(REPO, "examples", "vlan-trunk"), `lab-vlan-${process.pid}`, bin);
  await stack.init();
  await stack.connectTo(lab);
  await stack.setConfig("trunk", trunk);
});

afterAll(async () => {
  await stack?.pulumi(["destroy", "--yes"]);
  await stack?.dispose();
  await lab?.shutdown();
});

/** The steps of a preview that change something, in resource-name order (the engine's order varies). */
async function changes() {
  return (await stack.previewSteps()).filter((s) => s.op !== "same").sort((a, b) => a.name.localeCompare(b.name));
}

const link = (name: string) => labLink(lab, name);

/** SSH logins the guest's sshd accepted so far (the lab harness's own exec session is one long-lived login). */
async function acceptedLogins(): Promise<number> {
  const r = await lab.exec("journalctl -u ssh.service -o cat --no-pager | grep -c '^Accepted publickey'", { allowFail: true });
  return Number(r.stdout.trim());
}

type Doc = { deployment: { resources?: { type: string; urn: string; id?: string; outputs?: Record<string, unknown> }[] } };
const vlanResources = (doc: Doc) => (doc.deployment.resources ?? []).filter((r) => r.type === VLAN_TYPE);
const vlanOuts = async (name: string) => vlanResources((await stack.exportState(true)).doc as Doc).find((r) => r.urn.endsWith(`::${name}`))?.outputs;

describe("examples/vlan-trunk under the real engine on the lab host", () => {
  it("runs the whole life cycle and leaves the host as it was", async () => {
    // A trunk that is down: the VLANs bring it up, and destroy takes it down again.
    await lab.exec(`ip link set dev ${trunk} down`);
    const before = await labSnapshot(lab);
    const v10 = `${trunk}.10`;
    const v20 = `${trunk}.20`;

    // up: one SSH connection for the whole deployment.
    const logins = await acceptedLogins();
    await stack.ok(["up", "--yes"]);
    expect((await acceptedLogins()) - logins).toBe(1);
    expect(await link(v10)).toMatchObject({ master: "br-vlan10", linkinfo: { info_data: { protocol: "802.1Q", id: 10 } } });
    expect(await link(v20)).toMatchObject({ master: "br-vlan20", linkinfo: { info_data: { protocol: "802.1Q", id: 20 } } });
    expect((await link(trunk))?.flags).toContain("UP");

    // P1 / P2: nothing to do afterwards.
    await stack.ok(["preview", "--expect-no-changes"]);
    await stack.ok(["up", "--yes", "--expect-no-changes"]);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

    // P6: mtu is an in-place update of exactly that field.
    await stack.setConfig("mtu", "1400");
    const mtuSteps = await changes();
    expect(mtuSteps).toEqual([
      { op: "update", type: VLAN_TYPE, name: "vlan10", changedInputs: ["mtu"] },
      { op: "update", type: VLAN_TYPE, name: "vlan20", changedInputs: ["mtu"] },
    ]);
    const ifindex10 = (await link(v10))?.ifindex;
    await stack.ok(["up", "--yes"]);
    expect(await link(v10)).toMatchObject({ mtu: 1400, ifindex: ifindex10 });
    expect((await link(v20))?.mtu).toBe(1400);
    await stack.ok(["preview", "--expect-no-changes"]);

    // P6: protocol replaces each VLAN (same name: the old one goes first).
    await stack.setConfig("protocol", "802.1ad");
    const protoSteps = await changes();
    expect(
      protoSteps
        .filter((s) => s.op === "replace")
        .map((s) => s.name)
        .sort(),
    ).toEqual(["vlan10", "vlan20"]);
    expect(protoSteps.every((s) => s.type === VLAN_TYPE)).toBe(true);
    await stack.ok(["up", "--yes"]);
    expect(await link(v10)).toMatchObject({ master: "br-vlan10", mtu: 1400, linkinfo: { info_data: { protocol: "802.1ad", id: 10 } } });
    expect((await link(v10))?.ifindex).not.toBe(ifindex10);
    await stack.ok(["preview", "--expect-no-changes"]);
    await stack.setConfig("protocol", "802.1Q");
    await stack.ok(["up", "--yes"]);
    expect((await link(v10))?.linkinfo?.info_data?.protocol).toBe("802.1Q");

    // P2: drift by hand (released from its bridge, another mtu) → refresh reports it → up repairs it.
    await lab.exec(`ip link set dev ${v10} nomaster && ip link set dev ${v20} mtu 1300`);
    expect((await stack.pulumi(["refresh", "--yes", "--expect-no-changes"])).code).not.toBe(0);
    expect((await vlanOuts("vlan10"))?.bridge).toBeUndefined();
    expect((await vlanOuts("vlan20"))?.mtu).toBe(1300);
    const repair = await changes();
    expect(repair).toEqual([
      { op: "update", type: VLAN_TYPE, name: "vlan10", changedInputs: ["bridge"] },
      { op: "update", type: VLAN_TYPE, name: "vlan20", changedInputs: ["mtu"] },
    ]);
    await stack.ok(["up", "--yes"]);
    expect(await link(v10)).toMatchObject({ master: "br-vlan10" });
    expect((await link(v20))?.mtu).toBe(1400);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

    // P5: deleted by hand → refresh drops it → up creates it again.
    await lab.exec(`ip link del dev ${v10}`);
    const refreshed = await stack.ok(["refresh", "--yes"]);
    expect(refreshed.stdout).toMatch(/vlan10\s+deleted/);
    expect(await changes()).toEqual([{ op: "create", type: VLAN_TYPE, name: "vlan10", changedInputs: expect.any(Array) }]);
    await stack.ok(["up", "--yes"]);
    expect(await link(v10)).toMatchObject({ master: "br-vlan10", mtu: 1400 });

    // Dropped from the state, the VLAN still carries this resource's creation record on
    // the host: the next up takes it back, as after a create whose result was lost (#14 item 7).
    const known = await vlanOuts("vlan20");
    const urnOf = async () => vlanResources((await stack.exportState()).doc as Doc).find((r) => r.urn.endsWith("::vlan20"))!.urn;
    await stack.ok(["state", "delete", await urnOf(), "--yes"]);
    await stack.ok(["up", "--yes"]);
    const { connection: _c0, ...retaken } = (await vlanOuts("vlan20")) ?? {};
    const { connection: _c3, ...createdBefore } = known ?? {};
    expect(retaken).toEqual(createdBefore);

    // P3: a VLAN the state does not know and that has no such record (made by hand or by
    // another tool) is a Conflict; with adopt it is taken into state exactly as create
    // made it (only the adopt flag differs).
    await stack.ok(["state", "delete", await urnOf(), "--yes"]);
    await lab.exec(`rm /run/kvmnet/state/created/vlanSubinterface.${v20}`);
    const conflict = await stack.pulumi(["up", "--yes"]);
    expect(conflict.code).not.toBe(0);
    expect(conflict.stdout + conflict.stderr).toMatch(
      new RegExp(`Conflict: VLAN sub-interface ${v20.replace(".", "\\.")} \\(VLAN 20 \\(802\\.1Q\\) on ${trunk}\\) already exists on the host[\\s\\S]*adopt: true`),
    );
    await stack.setConfig("adopt", "true");
    await stack.ok(["up", "--yes"]);
    // (connection is left out: the engine nests its secrets differently after a create than after updates.)
    const { connection: _c1, ...adopted } = (await vlanOuts("vlan20")) ?? {};
    const { connection: _c2, ...created } = known ?? {};
    expect({ ...adopted, adopt: false }).toEqual(created);
    expect(created).toMatchObject({ name: v20, parent: trunk, vlanId: 20, bridge: "br-vlan20", mtu: 1400 });
    await stack.setConfig("adopt", "false");
    expect((await changes()).map((s) => [s.op, s.name, s.changedInputs])).toEqual([
      ["update", "vlan10", ["adopt"]],
      ["update", "vlan20", ["adopt"]],
    ]);
    await stack.ok(["up", "--yes"]);
    await stack.ok(["refresh", "--yes", "--expect-no-changes"]);

    // P9: invalid input fails at preview naming the resource and the field; the host is not contacted.
    const loginsBefore = await acceptedLogins();
    await stack.setConfig("trunk", "eth1;reboot");
    const bad = await stack.pulumi(["preview"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(
      /kvmnet:VlanSubinterface resource 'vlan(10|20)': property parent value \{eth1;reboot\} has a problem: parent: may contain only letters, digits/,
    );
    await stack.setConfig("trunk", "enp129s0f1np1x");
    const long = await stack.pulumi(["preview"]);
    expect(long.code).not.toBe(0);
    expect(long.stdout + long.stderr).toMatch(/name: is required here: the default "enp129s0f1np1x\.(10|20)" is over 15 characters/);
    expect(await acceptedLogins()).toBe(loginsBefore);
    await stack.setConfig("trunk", trunk);

    // P8: no plaintext secret in the state; P7: export | import round-trips.
    const { exported, plainBefore, reimported } = await stack.exportImport();
    for (const line of lab.privateKey.split("\n").filter((l) => l && !l.startsWith("-----"))) expect(exported.text).not.toContain(line);
    expect(exported.text).toContain("ciphertext");
    expect(vlanResources(reimported.doc as Doc)).toEqual(vlanResources(plainBefore.doc as Doc));
    expect(vlanResources(reimported.doc as Doc)).toHaveLength(2);
    await stack.ok(["preview", "--expect-no-changes"]);

    // P4: destroy leaves the host as before up (the trunk down again, no files of ours).
    await stack.ok(["destroy", "--yes"]);
    expect(await labSnapshot(lab)).toEqual(before);
  });
});

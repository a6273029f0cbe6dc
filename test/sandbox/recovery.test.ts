/**
 * #14 item 7 from the client's side: the SSH connection is cut while a create's
 * apply script runs on the host (the script runs to its end without its
 * client). The create fails with the error and hint a user sees after such a
 * crash, and the next create with the same inputs (the engine's retry on the
 * next `up`) converges with no manual step.
 */
import { portForwardProvider } from "../../provider/resources/portForward";
import { snapshotHost } from "../../testbed/fleet";
import { createAndCutConnectionMidApply } from "./interrupt";
import { checkedInputs, oneSandboxHost, sandboxConnection } from "../support/drive";

const host = oneSandboxHost();

const conn = () => sandboxConnection(host());
const create = async (props: Record<string, unknown>) => portForwardProvider.create(await checkedInputs(portForwardProvider, { connection: conn(), ...props }));

describe("a connection cut mid-create", () => {
  it("fails with a hint that leads to the next up, which converges; delete leaves no trace", async () => {
    const before = await snapshotHost(host());
    const props = { protocol: "tcp", hostPort: 8443, destination: "10.99.0.10", destinationPort: 443 };
    const err = (await createAndCutConnectionMidApply(host(), () => create(props))) as { kind?: string; hint?: string; message?: string };
    expect({ kind: err.kind, hint: err.hint }).toEqual({ kind: "Unreachable", hint: "run `pulumi refresh` to see what the host has, then `pulumi up` again" });
    expect(err.message).toMatch(/SSH connection lost while a command ran; it may or may not have completed/);
    // The host finished the apply without its client.
    const tables = async () =>
      (JSON.parse((await host().exec("nft -j list tables")).stdout).nftables as { table?: { name: string } }[]).flatMap((t) => (t.table ? [t.table.name] : []));
    expect(await tables()).toContain("kvmnet_pf_tcp_any_8443");
    // The next `up`: the same inputs, a new connection.
    const again = await create(props);
    expect(again.outs).toMatchObject({ table: "kvmnet_pf_tcp_any_8443", destination: "10.99.0.10", destinationPort: 443, drift: [] });
    expect((await tables()).filter((t) => t.startsWith("kvmnet_pf_"))).toEqual(["kvmnet_pf_tcp_any_8443"]);
    await portForwardProvider.delete(again.id, again.outs);
    expect(await snapshotHost(host())).toEqual(before);
  });
});

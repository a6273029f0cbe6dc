import * as pulumi from "@pulumi/pulumi";
import { resolveConnection } from "../../../provider/host";
import { connectionSecrets } from "../../../provider/host/connection";
import { SECRET_FIELDS } from "../../../provider/validate";
import { protectConnection } from "../../../sdk/types";

/**
 * #17 item 5: the credential fields were listed three times (the SDK's
 * protectConnection, redaction's connectionSecrets, check's SECRET_FIELDS).
 * Now one list; these pin that its consumers follow it.
 */
describe("the connection's secret fields, listed once", () => {
  const connection = {
    host: "kvm1",
    user: "ops",
    privateKey: "KEY-TEXT",
    privateKeyPassphrase: "PASSPHRASE",
    password: "PASSWORD",
    sudo: { password: "SUDO-PASSWORD" },
    jumpHost: { host: "bastion", password: "JUMP-PASSWORD" },
  };

  it("are the credentials", () => {
    expect([...SECRET_FIELDS]).toEqual(["privateKey", "privateKeyPassphrase", "password"]);
  });

  it("the SDK makes exactly them (and sudo's password, through the jump host too) secret in state", async () => {
    const isSecret = (v: unknown) => (pulumi.Output.isInstance(v) ? pulumi.isSecret(v) : Promise.resolve(false));
    const c = protectConnection(connection) as unknown as Record<string, unknown>;
    const secret = async (o: Record<string, unknown>) => (await Promise.all(Object.entries(o).map(async ([k, v]) => ((await isSecret(v)) ? k : undefined)))).filter(Boolean);
    expect(await secret(c)).toEqual([...SECRET_FIELDS]);
    expect(await isSecret((c.sudo as Record<string, unknown>).password)).toBe(true);
    expect(await secret(c.jumpHost as Record<string, unknown>)).toEqual(["password"]);
  });

  it("redaction collects exactly their values", () => {
    const resolved = resolveConnection({ ...connection, jumpHost: { host: "bastion", password: "JUMP-PASSWORD" } });
    expect(connectionSecrets(resolved).sort()).toEqual(["JUMP-PASSWORD", "KEY-TEXT", "PASSPHRASE", "PASSWORD", "SUDO-PASSWORD"]);
  });
});

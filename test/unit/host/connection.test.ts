import { bridgeProvider } from "../../../provider/resources/bridge";

const base = { name: "br0" };
async function failuresFor(connection: Record<string, unknown>) {
  return (await bridgeProvider.check({}, { ...base, connection })).failures ?? [];
}

describe("connection check: passwords", () => {
  // sudo -S reads the password up to the first newline: whatever follows would
  // share the stream that carries the script (issue #14, item 6).
  it.each(["pw\n@@kvmnet-script\ntouch /tmp/pwned", "pw\r", "pw\0", "\u0007pw", "pw\u007f", "p\tw", "pw\u001b[0m"])(
    "refuses sudo.password %j, naming the field and hiding the value",
    async (password) => {
      const failures = await failuresFor({ host: "h", user: "ops", sudo: { password } });
      expect(failures.map((f) => f.property)).toEqual(["connection"]);
      expect(failures[0].reason).toMatch(/^connection\.sudo\.password: must not contain control characters/);
      expect(JSON.stringify(failures)).not.toContain("pwned");
    },
  );

  it.each(["s3cret-sudo-Pa55", "with space", "ünïcødé", "'\"$(id)`;|&"])("accepts sudo.password %j", async (password) => {
    expect(await failuresFor({ host: "h", user: "ops", sudo: { password } })).toEqual([]);
  });

  it("refuses a control character in a jump host's sudo.password too", async () => {
    const failures = await failuresFor({ host: "h", jumpHost: { host: "j", sudo: { password: "a\nb" } } });
    expect(failures[0]?.reason).toMatch(/^connection\.jumpHost\.sudo\.password: /);
  });

  // The SSH login password and key passphrase travel as length-prefixed SSH
  // strings or are used locally: a newline in them is representable, NUL is not.
  it("keeps accepting newlines in the login password, refusing NUL", async () => {
    expect(await failuresFor({ host: "h", password: "multi\nline" })).toEqual([]);
    expect((await failuresFor({ host: "h", password: "nul\0" }))[0]?.reason).toMatch(/^connection\.password: must not contain NUL/);
  });
});

import { redact } from "../../provider/errors";

describe("redact", () => {
  const message = "Permission denied (publickey,password): sudo: 1 incorrect password attempt at line 12";

  // "1" and "12" stand alone in the message: values this short are never hidden at all.
  it.each(["e", "a", "1", "12", "ss", "ord", "word", "pass"])("a tiny secret %j never corrupts ordinary words or numbers", (secret) => {
    expect(redact(message, [secret])).toBe(message);
  });

  it.each([
    ["pw: xY7 was refused", "xY7", "pw: [secret] was refused"],
    ["token=ab12;", "ab12", "token=[secret];"],
    ["ab12", "ab12", "[secret]"],
    ['"q9Z!x" is wrong', "q9Z!x", '"[secret]" is wrong'],
  ])("a short secret standing alone in %j is still hidden", (text, secret, expected) => {
    expect(redact(text, [secret])).toBe(expected);
  });

  it("hides a secret of 6 characters or more wherever it occurs, even inside a word", () => {
    expect(redact("xxhunter2xx and hunter2", ["hunter2"])).toBe("xx[secret]xx and [secret]");
  });

  it("hides each long line of a multi-line secret (PEM bodies), not its armour lines", () => {
    const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
    const out = redact("cannot parse: b3BlbnNzaC1rZXktdjEAAAAA (-----BEGIN OPENSSH PRIVATE KEY-----)", [key]);
    expect(out).toBe("cannot parse: [secret] (-----BEGIN OPENSSH PRIVATE KEY-----)");
  });

  it("treats regex metacharacters in a short secret literally", () => {
    expect(redact("a.b a+b (a.b)", ["a.b"])).toBe("[secret] a+b ([secret])");
  });
});

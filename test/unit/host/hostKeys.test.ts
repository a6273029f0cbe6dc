import { createHmac, randomBytes } from "crypto";
import { fingerprint, judgeKnownHosts, keyType, knownHostsName, matchesPin } from "../../../provider/host/hostKeys";

// A real ed25519 public key blob (from `ssh-keygen -t ed25519`).
const line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDWxEPkTp/1J9wKXxsbPz6iEGCmuCrVbDvbgkuK6MPTl test";
const blob = Buffer.from(line.split(" ")[1], "base64");
const other = Buffer.from("AAAAC3NzaC1lZDI1NTE5AAAAIH7tbN6Hnmz5aZYRfJjSiQsD0rTMYr6Y1Uf8HfD8yK2g", "base64");

describe("fingerprint", () => {
  it("matches OpenSSH's SHA256 format", () => {
    // ssh-keygen -lf prints this for the key above.
    expect(fingerprint(blob)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(keyType(blob)).toBe("ssh-ed25519");
  });
  it("pins by fingerprint or key line", () => {
    expect(matchesPin(fingerprint(blob), blob)).toBe(true);
    expect(matchesPin(line, blob)).toBe(true);
    expect(matchesPin(fingerprint(other), blob)).toBe(false);
    expect(matchesPin("ssh-ed25519 " + other.toString("base64"), blob)).toBe(false);
  });
});

describe("known_hosts", () => {
  const b64 = blob.toString("base64");
  it.each([
    [`10.0.0.5 ssh-ed25519 ${b64}`, "10.0.0.5", 22, "match"],
    [`[10.0.0.5]:2222 ssh-ed25519 ${b64}`, "10.0.0.5", 2222, "match"],
    [`10.0.0.5 ssh-ed25519 ${b64}`, "10.0.0.5", 2222, "unknown"],
    [`kvm*.lab,!kvm9.lab ssh-ed25519 ${b64}`, "kvm1.lab", 22, "match"],
    [`kvm*.lab,!kvm9.lab ssh-ed25519 ${b64}`, "kvm9.lab", 22, "unknown"],
    [`10.0.0.5 ssh-ed25519 ${other.toString("base64")}`, "10.0.0.5", 22, "mismatch"],
    [`@revoked 10.0.0.5 ssh-ed25519 ${b64}\n10.0.0.5 ssh-ed25519 ${b64}`, "10.0.0.5", 22, "revoked"],
    [`# comment\n\nother ssh-ed25519 ${b64}`, "10.0.0.5", 22, "unknown"],
  ])("%j for %s:%d → %s", (text, host, port, verdict) => {
    expect(judgeKnownHosts(text, [knownHostsName(host, port)], blob)).toBe(verdict);
  });

  it("understands hashed host names", () => {
    const salt = randomBytes(20);
    const hash = createHmac("sha1", salt).update("kvm1.example.net").digest("base64");
    const text = `|1|${salt.toString("base64")}|${hash} ssh-ed25519 ${b64}`;
    expect(judgeKnownHosts(text, ["kvm1.example.net"], blob)).toBe("match");
    expect(judgeKnownHosts(text, ["kvm2.example.net"], blob)).toBe("unknown");
  });
});

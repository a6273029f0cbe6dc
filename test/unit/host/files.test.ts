import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { readRegularFile, readRegularFileSync } from "../../../provider/host/files";
import { readKnownHosts } from "../../../provider/host/hostKeys";
import { expectKvmnetError, expectKvmnetThrow } from "../../support/expectError";

// A FIFO opened for reading waits for a writer forever; these tests must fail, not hang.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-files-"));
const fifo = path.join(dir, "fifo");
const regular = path.join(dir, "known_hosts");
beforeAll(() => {
  execFileSync("mkfifo", [fifo]);
  fs.writeFileSync(regular, "10.0.0.5 ssh-ed25519 AAAA\n");
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("readRegularFile", () => {
  it("refuses a FIFO without opening it, naming the field", async () => {
    await expectKvmnetError(readKnownHosts(fifo), "InvalidArgument", new RegExp(`connection\\.knownHostsFile ${fifo} is not a regular file \\(it is a FIFO\\)`));
  }, 5000);

  it.each([
    ["a directory", dir],
    ["a character device", "/dev/zero"],
  ])(
    "refuses %s",
    async (kind, p) => {
      await expectKvmnetError(readRegularFile(p, `IdentityFile ${p}`, 1024), "InvalidArgument", new RegExp(`is not a regular file \\(it is ${kind}\\)`));
    },
    5000,
  );

  it("refuses a file over the bound", async () => {
    await expectKvmnetError(readRegularFile(regular, "x", 10), "InvalidArgument", /^InvalidArgument: x is larger than 10 bytes/);
  });

  it("reads a regular file, and a missing one is undefined", async () => {
    expect(await readRegularFile(regular, "x", 1024)).toBe("10.0.0.5 ssh-ed25519 AAAA\n");
    expect(await readRegularFile(path.join(dir, "missing"), "x", 1024)).toBeUndefined();
    expect(await readKnownHosts(path.join(dir, "missing"))).toBe("");
  });
});

describe("readRegularFileSync", () => {
  it("refuses a FIFO and a big file, reads a regular one", () => {
    expectKvmnetThrow(() => readRegularFileSync(fifo, `ssh config ${fifo}`, 1024), "InvalidArgument", /is not a regular file \(it is a FIFO\)/);
    expectKvmnetThrow(() => readRegularFileSync(regular, "x", 10), "InvalidArgument", /larger than 10 bytes/);
    expect(readRegularFileSync(regular, "x", 1024)).toBe("10.0.0.5 ssh-ed25519 AAAA\n");
    expect(readRegularFileSync(path.join(dir, "missing"), "x", 1024)).toBeUndefined();
  }, 5000);
});

/**
 * Reading the user's ssh files (known_hosts, identity files, ssh config)
 * without ever blocking: a FIFO, a character device or a huge file named by a
 * connection field must fail with a clear error, not freeze the provider's
 * event loop (readFileSync on a FIFO waits for a writer forever; issue #14,
 * item 10).
 *
 * Each read stats the path and refuses anything but a regular file BEFORE
 * opening it (opening some devices has effects), then opens it O_NONBLOCK
 * (a FIFO swapped in meanwhile opens at once instead of waiting for a writer),
 * checks the opened descriptor again, and reads at most `maxBytes`.
 */
import { constants as C } from "fs";
import * as fs from "fs";
import { isKvmnetError, KvmnetError } from "../errors";

const OPEN_FLAGS = C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY;
const CHUNK = 64 * 1024;

function kindOf(st: fs.Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isDirectory()) return "a directory";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  return "not a file";
}

function notRegular(what: string, st: fs.Stats): KvmnetError {
  return new KvmnetError({ kind: "InvalidArgument", message: `${what} is not a regular file (it is ${kindOf(st)})`, hint: "name a regular file" });
}

function tooBig(what: string, maxBytes: number): KvmnetError {
  return new KvmnetError({ kind: "InvalidArgument", message: `${what} is larger than ${maxBytes} bytes` });
}

function unreadable(what: string, e: unknown): KvmnetError {
  if (isKvmnetError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  return new KvmnetError({ kind: "InvalidArgument", message: `${what} cannot be read: ${err.code ?? err.message}`, cause: e });
}

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/**
 * The text of a regular file of at most `maxBytes`, or undefined when it does
 * not exist. `what` names the file in errors, path included
 * (e.g. "connection.knownHostsFile /root/.ssh/known_hosts").
 */
export async function readRegularFile(file: string, what: string, maxBytes: number): Promise<string | undefined> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(file);
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw unreadable(what, e);
  }
  if (!st.isFile()) throw notRegular(what, st);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, OPEN_FLAGS);
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw unreadable(what, e);
  }
  try {
    const opened = await fh.stat();
    if (!opened.isFile()) throw notRegular(what, opened);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const { bytesRead, buffer } = await fh.read(Buffer.alloc(CHUNK), 0, CHUNK, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) throw tooBig(what, maxBytes);
      chunks.push(buffer.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks).toString("utf8");
  } catch (e) {
    throw unreadable(what, e);
  } finally {
    await fh.close();
  }
}

/**
 * Synchronous twin of {@link readRegularFile}, for the one read that must be
 * synchronous: the ssh config, which decides a Host's label when hostFor()
 * returns. Bounded all the same: it never opens anything but a regular file,
 * opens O_NONBLOCK, and reads at most `maxBytes`.
 */
export function readRegularFileSync(file: string, what: string, maxBytes: number): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw unreadable(what, e);
  }
  if (!st.isFile()) throw notRegular(what, st);
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw unreadable(what, e);
  }
  try {
    const opened = fs.fstatSync(fd);
    if (!opened.isFile()) throw notRegular(what, opened);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.alloc(CHUNK);
      const bytesRead = fs.readSync(fd, chunk, 0, CHUNK, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) throw tooBig(what, maxBytes);
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks).toString("utf8");
  } catch (e) {
    throw unreadable(what, e);
  } finally {
    fs.closeSync(fd);
  }
}

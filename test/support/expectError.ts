import { isKvmnetError } from "../../provider/errors";

/** Await `p`, expect it to reject with a KvmnetError of `kind` whose message matches `re`; returns the error. */
export async function expectKvmnetError(p: Promise<unknown>, kind: string, re: RegExp): Promise<Error & { kind: string }> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(isKvmnetError(err)).toBe(true);
  expect({ kind: (err as { kind: string }).kind, message: (err as Error).message }).toEqual({ kind, message: expect.stringMatching(re) });
  return err as Error & { kind: string };
}

/** Call `fn`, expect it to throw a KvmnetError of `kind` whose message matches `re`; returns the message. */
export function expectKvmnetThrow(fn: () => unknown, kind: string, re: RegExp): string {
  try {
    fn();
  } catch (e) {
    expect(isKvmnetError(e)).toBe(true);
    expect({ kind: (e as { kind: string }).kind, message: (e as Error).message }).toEqual({ kind, message: expect.stringMatching(re) });
    return (e as Error).message;
  }
  throw new Error("expected an error");
}

/** Call `fn`, expect it to throw a KvmnetError; returns its kind and the hint it prints (#14 item 7: every hint is asserted). */
export function kindAndHint(fn: () => unknown): { kind: string; hint?: string } {
  try {
    fn();
  } catch (e) {
    expect(isKvmnetError(e)).toBe(true);
    return { kind: (e as { kind: string }).kind, hint: (e as { hint?: string }).hint };
  }
  throw new Error("expected an error");
}

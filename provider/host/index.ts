/** Host access: pick the transport a connection asks for. */
import { ConnectionInput, resolveConnection } from "./connection";
import { LocalHost } from "./local";
import { DedicatedSshHost, SshHost } from "./ssh";
import { Host } from "./types";

export type { Host, RunOptions, RunResult } from "./types";
export { connectionSchema, resolveConnection, describeConnection } from "./connection";
export type { ConnectionInput } from "./connection";
export { closeAllConnections, poolStats } from "./ssh";

/** The Host for a validated connection input (SSH connections come from the shared pool). */
export function hostFor(c: ConnectionInput): Host {
  const resolved = resolveConnection(c);
  return resolved.local ? new LocalHost(resolved.sudo) : new SshHost(resolved);
}

/**
 * A Host on a connection that is not shared with anything else (a new SSH
 * handshake), for commit-confirm. A local connection has no session to lose.
 */
export function dedicatedHostFor(c: ConnectionInput): Host & { close(): void } {
  const resolved = resolveConnection(c);
  if (resolved.local) return Object.assign(new LocalHost(resolved.sudo), { close: () => undefined });
  return new DedicatedSshHost(resolved);
}

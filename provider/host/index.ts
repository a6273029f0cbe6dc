/** Host access: pick the transport a connection asks for. */
import { ConnectionInput, resolveConnection } from "./connection";
import { LocalHost } from "./local";
import { SshHost } from "./ssh";
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

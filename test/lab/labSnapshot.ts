/** The P4 snapshot of a lab host. */
import { SandboxHost, snapshotHost } from "../../testbed/fleet";
import type { LabHost } from "../../testbed/labHost";

/**
 * The P4 snapshot of testbed/fleet.ts (it only needs exec(), which a LabHost has),
 * taken once IPv6 duplicate address detection is over: a link that just came up shows
 * its link-local address "tentative" for a moment.
 */
export async function labSnapshot(lab: LabHost): Promise<unknown> {
  await lab.exec('for i in $(seq 300); do [ -z "$(ip -6 addr show tentative)" ] && exit 0; sleep 0.1; done; exit 1');
  return snapshotHost(lab as unknown as SandboxHost);
}

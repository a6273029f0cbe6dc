/**
 * A PortForward's boot-time configuration: a unit of our own on every backend
 * (issue 6), whatever network stack the host runs.
 *
 *   /etc/kvmnet/pf-<name>.nft                                 the table, as replace-or-create
 *   /etc/systemd/system/kvmnet-pf-<name>.service               oneshot: `nft -f` that file
 *   /etc/systemd/system/multi-user.target.wants/kvmnet-pf-<name>.service
 *   /etc/systemd/system/nftables.service.d/kvmnet-pf-<name>.conf   loads it again after
 *                                                              nftables.service flushes
 *
 * The unit has the same ordering as a NatNetwork's boot unit (after
 * network.target and nftables.service, before libvirt) and no ordering
 * against it: the forward's rules name addresses and ports, never interfaces
 * (`fib daddr type local`, `ip daddr`, `ip saddr <subnet>`), so they load
 * and match whether or not the network's bridge exists yet.
 */
import type { HostSnapshot } from "../../observe";
import type { Backend, PersistSet } from "../../persist";
import { nftablesDropIn, requireSystemd, unitFiles } from "../../persist/systemd";
import { desiredTable, PF_KIND, pfBootUnit, pfPersistPaths } from "./plan";
import { replaceText } from "./render";
import { PortForwardInputs } from "./schema";

/** The files forward `i` persists through (any backend but runtime). */
export function portForwardPersist(i: PortForwardInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  requireSystemd(backend, snap, `${PF_KIND} ${i.name}`);
  const p = pfPersistPaths(i.name);
  const t = desiredTable(i, snap);
  return {
    files: [
      { path: p.table, content: replaceText(t) },
      ...unitFiles({ unit: pfBootUnit(i.name), description: `PortForward ${i.name}: nft table ip ${t.table}`, execStart: `nft -f ${p.table}` }),
      nftablesDropIn(`pf-${i.name}`, p.table),
    ],
  };
}

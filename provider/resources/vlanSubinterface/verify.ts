/** Compare the host after apply with what was asked (nmstate-style messages). */
import { isOurVlan, VlanObserved } from "./plan";
import { VlanSubinterfaceInputs } from "./schema";

/** Every way the observed VLAN differs from `desired`; empty when it matches. */
export function verifyVlan(desired: VlanSubinterfaceInputs, obs: VlanObserved): string[] {
  const name = desired.name;
  if (!obs.exists) return [`vlanSubinterface ${name} does not exist`];
  if (!obs.isVlan) return [`${name} is not a VLAN (it is ${obs.kind})`];
  if (!isOurVlan(obs, desired)) {
    return [`vlanSubinterface ${name} desired VLAN ${desired.vlanId} (${desired.protocol}) on ${desired.parent}, current VLAN ${obs.vlanId} (${obs.protocol}) on ${obs.parent}`];
  }
  const problems: string[] = [];
  if (desired.mtu !== undefined && desired.mtu !== obs.mtu) problems.push(`vlanSubinterface ${name} mtu desired ${desired.mtu}, current ${obs.mtu}`);
  if (desired.bridge !== undefined && desired.bridge !== obs.master) {
    problems.push(`vlanSubinterface ${name} bridge desired ${desired.bridge}, current ${obs.master ?? "(none)"}`);
  }
  for (const a of desired.addresses) if (!obs.addresses.includes(a)) problems.push(`vlanSubinterface ${name} address ${a} desired present, current absent`);
  if (!obs.adminUp) problems.push(`vlanSubinterface ${name} state desired up, current down`);
  return problems;
}

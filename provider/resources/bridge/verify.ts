/** Compare the host after apply with what was asked (nmstate-style messages). */
import { BridgeObserved } from "./plan";
import { BridgeInputs, BridgeOptions, desiredOptions, OPTION_FIELDS } from "./schema";

/** Human units for a kernel option value (centiseconds → seconds). */
export function optionToInput(k: keyof BridgeOptions, v: number | undefined): number | boolean | undefined {
  if (v === undefined) return undefined;
  if (k === "stp_state") return v !== 0;
  if (k === "vlan_filtering") return v !== 0;
  if (k === "priority") return v;
  return v / 100;
}

/** Every way the observed bridge differs from `desired`; empty when it matches. */
export function verifyBridge(desired: BridgeInputs, obs: BridgeObserved): string[] {
  const name = desired.name;
  if (!obs.exists) return [`bridge ${name} does not exist`];
  if (!obs.isBridge) return [`${name} is not a bridge (it is ${obs.kind})`];
  const problems: string[] = [];
  const want = desiredOptions(desired);
  for (const k of Object.keys(want) as (keyof BridgeOptions)[]) {
    if (want[k] !== obs.options[k]) {
      // stp_state 1 may show as 1 (kernel STP) or 2 (user-space STP daemon): both mean "on".
      if (k === "stp_state" && want[k] === 1 && obs.options[k] === 2) continue;
      problems.push(`bridge ${name} ${OPTION_FIELDS[k]} desired ${optionToInput(k, want[k])}, current ${optionToInput(k, obs.options[k])}`);
    }
  }
  if (desired.mtu !== undefined && desired.mtu !== obs.mtu) problems.push(`bridge ${name} mtu desired ${desired.mtu}, current ${obs.mtu}`);
  if (desired.macAddress !== undefined && desired.macAddress !== obs.macAddress?.toLowerCase()) {
    problems.push(`bridge ${name} macAddress desired ${desired.macAddress}, current ${obs.macAddress}`);
  }
  for (const p of desired.ports) if (!obs.ports.includes(p)) problems.push(`bridge ${name} port ${p} desired attached, current not attached`);
  for (const a of desired.addresses) if (!obs.addresses.includes(a)) problems.push(`bridge ${name} address ${a} desired present, current absent`);
  for (const [port, moved] of Object.entries(obs.takenOver)) {
    for (const a of moved) if (!obs.addresses.includes(a)) problems.push(`bridge ${name} address ${a} (taken over from ${port}) desired present, current absent`);
  }
  if (!obs.adminUp) problems.push(`bridge ${name} state desired up, current down`);
  return problems;
}

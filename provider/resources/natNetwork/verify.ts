/** Compare the host with a NatNetwork (nmstate-style messages) and build its outputs. */
import { HostSnapshot } from "../../observe";
import { needsDnsmasq, tableName, tableRules } from "./files";
import { expectedRuleKeys, forwardDropChain, NatObserved, observeNat, resolveUplink, wildcardDnsListeners } from "./plan";
import { modeForwards, NatNetworkInputs } from "./schema";

function uplinkFor(n: NatNetworkInputs, obs: NatObserved, snap: HostSnapshot): string | undefined {
  return modeForwards(n.mode) ? (n.uplink ?? obs.state?.uplink ?? resolveUplink(n, snap)) : undefined;
}

function rulesMatch(n: NatNetworkInputs, obs: NatObserved, snap: HostSnapshot): boolean {
  if (obs.tableRules === undefined) return false;
  const uplink = uplinkFor(n, obs, snap);
  if (modeForwards(n.mode) && !uplink) return false;
  return obs.tableRules.slice().sort().join() === expectedRuleKeys(tableRules(n.mode, n.bridgeName, n.subnet, uplink)).join();
}

/** Every way the host differs from `desired`; empty when it matches. */
export function verifyNat(desired: NatNetworkInputs, snap: HostSnapshot): string[] {
  const obs = observeNat(snap, desired);
  const who = `natNetwork ${desired.name}`;
  const br = desired.bridgeName;
  if (!obs.bridge) return [`${who} bridge ${br} desired present, current absent`];
  const problems: string[] = [];
  if (!obs.bridge.isBridge) problems.push(`${who} ${br} desired bridge, current ${obs.bridge.kind}`);
  if (!obs.bridge.up) problems.push(`${who} bridge ${br} state desired up, current down`);
  if (desired.mtu !== undefined && obs.bridge.mtu !== desired.mtu) problems.push(`${who} bridge ${br} mtu desired ${desired.mtu}, current ${obs.bridge.mtu}`);
  if (!obs.gatewayPresent) problems.push(`${who} bridge ${br} address ${desired.gateway} desired present, current absent`);
  if (obs.tableRules === undefined) problems.push(`${who} nft table inet ${tableName(desired.name)} desired present, current absent`);
  else if (!rulesMatch(desired, obs, snap)) {
    const want = expectedRuleKeys(tableRules(desired.mode, br, desired.subnet, uplinkFor(desired, obs, snap)));
    problems.push(`${who} nft rules desired [${want.join(", ")}], current [${obs.tableRules.slice().sort().join(", ")}]`);
  }
  if (modeForwards(desired.mode) && obs.ipForward !== "1") problems.push(`${who} net.ipv4.ip_forward desired 1, current ${obs.ipForward || "(absent)"}`);
  const running = obs.dnsmasq?.running === true;
  if (needsDnsmasq(desired) && !running) problems.push(`${who} dnsmasq desired running, current ${obs.dnsmasq ? "dead" : "not started"}`);
  if (!needsDnsmasq(desired) && running) problems.push(`${who} dnsmasq desired stopped, current running (pid ${obs.dnsmasq?.pid})`);
  return problems;
}

/** Conditions on the host that do not stop the network but may hurt it. */
export function natWarnings(n: NatNetworkInputs, obs: NatObserved, snap: HostSnapshot): string[] {
  const w: string[] = [];
  const drop = forwardDropChain(snap);
  if (drop && !modeForwards(n.mode)) w.push(`chain ${drop} has policy drop (Docker installs it): traffic forwarded through this host is dropped there`);
  if (snap.sysctls["bridge/bridge-nf-call-iptables"] === "1") {
    w.push(
      "br_netfilter is loaded with net.bridge.bridge-nf-call-iptables=1: traffic between guests on the bridge also passes iptables/nft FORWARD rules (a drop policy there cuts guests off from each other)",
    );
  }
  if (modeForwards(n.mode) && obs.sysctlFilesDisablingForward.length > 0) {
    w.push(
      `net.ipv4.ip_forward=0 is set in ${obs.sysctlFilesDisablingForward.join(", ")}: a reboot or \`sysctl --system\` turns forwarding off and breaks this network until the next pulumi up`,
    );
  }
  if (n.dns.enabled && obs.dnsmasq?.running) {
    const wild = wildcardDnsListeners(snap);
    if (wild.length > 0) w.push(`another DNS server listens on ${wild.join(", ")}; guests must query the gateway ${n.gateway} to reach this network's names`);
  }
  return w;
}

/**
 * Outputs, or undefined when nothing of the network is on the host. Input
 * fields show what the host has, so refresh shows drift and the next up
 * repairs it: `mode` is left out when the table or its rules are missing,
 * `gateway` when the address is gone, `dhcp`/`dns` when dnsmasq is dead,
 * `mtu` is the bridge's actual MTU.
 */
export function natOutputs(inputs: NatNetworkInputs, snap: HostSnapshot): Record<string, unknown> | undefined {
  const obs = observeNat(snap, inputs);
  // A dnsmasq still running the network's config is the network not yet gone (a delete must not report success, #14).
  if (!obs.bridge && obs.tableRules === undefined && !obs.state && !obs.dnsmasq && obs.daemonPids.length === 0) return undefined;
  const out: Record<string, unknown> = { ...inputs };
  const uplink = uplinkFor(inputs, obs, snap);
  if (uplink !== undefined) out.uplink = uplink;
  if (!rulesMatch(inputs, obs, snap)) delete out.mode;
  if (!obs.gatewayPresent) delete out.gateway;
  const running = obs.dnsmasq?.running === true;
  if (needsDnsmasq(inputs) ? !running : running) {
    delete out.dhcp;
    delete out.dns;
  }
  if (inputs.mtu !== undefined) out.mtu = obs.bridge?.mtu;
  out.warnings = natWarnings(inputs, obs, snap);
  out.ifindex = obs.bridge?.ifindex ?? null;
  out.macAddress = obs.bridge?.macAddress ?? null;
  out.dnsmasqPid = running ? (obs.dnsmasq?.pid ?? null) : null;
  // The systemd unit that runs dnsmasq (`systemctl status <unit>`), null without systemd.
  out.dnsmasqUnit = running ? (obs.state?.dnsmasqUnit ?? null) : null;
  out.tablePresent = obs.tableRules !== undefined;
  out.ipForward = obs.ipForward === "1";
  return out;
}

/** Bridge actions → shell steps (values quoted by shell.ts only). */
import { STATE_DIR } from "../../observe";
import { absentGuard, createBridgeStep, isBridgeGuard, linkActionStep } from "../../linkSteps";
import { Guard, Plan, Step } from "../../render";
import { andThen, joinLines, Script, sh, writeFile } from "../../shell";
import { BridgeAction, BridgeGuard, BridgePlan, BridgeState, stateFilePath } from "./plan";
import type { LiveRoute } from "./takeover";
import { BridgeOptions } from "./schema";

function optionList(o: BridgeOptions): (string | number)[] {
  const words: (string | number)[] = [];
  for (const [k, v] of Object.entries(o) as [string, number | undefined][]) if (v !== undefined) words.push(k, v);
  return words;
}
function optionWords(o: BridgeOptions): Script {
  return sh`${optionList(o)}`;
}

/** `ip route replace` words that make `r` again on `dev`. */
function routeReplace(r: LiveRoute, dev: string): Script {
  const words: (string | number)[] = [r.dst];
  if (r.gateway) words.push("via", r.gateway);
  if (r.onlink) words.push("onlink");
  if (r.protocol) words.push("proto", r.protocol);
  if (r.scope) words.push("scope", r.scope);
  if (r.prefsrc) words.push("src", r.prefsrc);
  if (r.metric !== undefined) words.push("metric", r.metric);
  if (r.pref) words.push("pref", r.pref);
  return sh`ip ${r.family} route replace ${words} dev ${dev}`;
}

/**
 * Move addresses and the non-kernel routes (default route, static routes)
 * from interface `from` to `to`. The routes are `from`'s as observed (`ip -j
 * route`, takeover.ts's liveRoutes): they vanish with the addresses their
 * gateways hang off, so they are made again on `to` after the addresses moved;
 * every one is tried, and the step fails if any could not be made. Kernel
 * routes follow the addresses by themselves; `proto ra` routes are learnt
 * again. `enslave`: `from` (the uplink) joins bridge `to` first, and the bridge
 * comes up, so the moved addresses answer at once. `release`: `to` (the
 * uplink) leaves the bridge after the addresses left it.
 */
function moveUplink(
  from: string,
  to: string,
  addresses: string[],
  routes: LiveRoute[],
  o: { enslave?: boolean; bringUp?: boolean; release?: boolean; bringDown?: boolean },
): Script {
  const parts: Script[] = [];
  if (o.enslave) {
    parts.push(sh`ip link set dev ${to} up`, sh`ip link set dev ${from} master ${to}`);
    if (o.bringUp) parts.push(sh`ip link set dev ${from} up`);
  }
  if (o.release) parts.push(sh`ip link set dev ${to} nomaster`);
  for (const a of addresses) parts.push(sh`{ ip addr del ${a} dev ${from} 2>/dev/null; ip addr replace ${a} dev ${to}; }`);
  if (routes.length > 0) parts.push(sh`{ kvmnet_rf=0; ${joinLines(routes.map((r) => sh`${routeReplace(r, to)} || kvmnet_rf=1`))}; [ "$kvmnet_rf" = 0 ]; }`);
  // An uplink that was down before we took it over goes down again.
  if (o.release && o.bringDown) parts.push(sh`ip link set dev ${to} down`);
  return andThen(parts);
}

function renderAction(a: BridgeAction): Step {
  switch (a.op) {
    case "create":
      return createBridgeStep(a.name, a.mac, optionList(a.options));
    case "setOptions":
      return {
        description: `set ${Object.keys(a.options).join(", ")} on bridge ${a.name}`,
        run: sh`ip link set dev ${a.name} type bridge ${optionWords(a.options)}`,
        undo: sh`ip link set dev ${a.name} type bridge ${optionWords(a.previous)}`,
      };
    case "setMac":
      return {
        description: `set address ${a.mac} on ${a.name}`,
        run: sh`ip link set dev ${a.name} address ${a.mac}`,
        undo: a.previous !== undefined ? sh`ip link set dev ${a.name} address ${a.previous}` : undefined,
      };
    case "attachPort":
      return {
        description: `attach ${a.port} to ${a.name}`,
        run: a.bringUp ? sh`ip link set dev ${a.port} master ${a.name} && ip link set dev ${a.port} up` : sh`ip link set dev ${a.port} master ${a.name}`,
        undo: a.bringUp ? sh`ip link set dev ${a.port} nomaster; ip link set dev ${a.port} down` : sh`ip link set dev ${a.port} nomaster`,
      };
    case "detachPort":
      return {
        description: `release ${a.port} from ${a.name}`,
        run: a.bringDown ? sh`ip link set dev ${a.port} nomaster && ip link set dev ${a.port} down` : sh`ip link set dev ${a.port} nomaster`,
        undo: a.bringDown ? sh`ip link set dev ${a.port} master ${a.name}; ip link set dev ${a.port} up` : sh`ip link set dev ${a.port} master ${a.name}`,
      };
    case "takeOver":
      return {
        description: `take over ${a.port}: enslave it to ${a.name} and move its addresses and routes onto the bridge`,
        run: moveUplink(a.port, a.name, a.addresses, a.routes, { enslave: true, bringUp: a.bringUp }),
        undo: moveUplink(a.name, a.port, a.addresses, a.routes, { release: true, bringDown: a.bringUp }),
      };
    case "giveBack":
      return {
        description: `give ${a.port} its addresses and routes back from ${a.name} and release it`,
        run: moveUplink(a.name, a.port, a.addresses, a.routes, { release: true, bringDown: a.bringDown }),
        undo: moveUplink(a.port, a.name, a.addresses, a.routes, { enslave: true, bringUp: a.bringDown }),
      };
    case "writeState": {
      const path = stateFilePath(a.name);
      const dir = path.slice(0, path.lastIndexOf("/"));
      const isEmpty = (st: BridgeState) => st.portsBroughtUp.length === 0 && Object.keys(st.takenOver).length === 0;
      return {
        description: `record state of ${a.name}`,
        run: sh`mkdir -p ${dir} && ${writeFile(path, JSON.stringify(a.state))}`,
        undo: !isEmpty(a.previous) ? writeFile(path, JSON.stringify(a.previous)) : sh`rm -f ${path}; rmdir ${STATE_DIR}/bridge ${STATE_DIR} /run/kvmnet 2>/dev/null; true`,
      };
    }
    case "removeState":
      // Remove our directories too once empty (rmdir refuses non-empty ones).
      return { description: `remove state of ${a.name}`, run: sh`rm -f ${stateFilePath(a.name)} && { rmdir ${STATE_DIR}/bridge ${STATE_DIR} /run/kvmnet 2>/dev/null || true; }` };
    default:
      return linkActionStep(a, "bridge");
  }
}

function renderGuard(g: BridgeGuard): Guard {
  switch (g.op) {
    case "absent":
      return absentGuard(g.name);
    case "isBridge":
      return isBridgeGuard(g.name);
    case "portAvailable":
      return {
        test: sh`ip link show dev ${g.port} >/dev/null 2>&1 && [ ! -e /sys/class/net/${g.port}/master ]`,
        kind: "Conflict",
        message: `port ${g.port} vanished or joined another master while this change was planned`,
      };
  }
}

export function renderBridgePlan(plan: BridgePlan): Plan {
  return { guards: plan.guards.map(renderGuard), steps: plan.actions.map(renderAction), ...(plan.confirm ? { confirm: plan.confirm } : {}) };
}

/** Bridge actions → shell steps (values quoted by shell.ts only). */
import { STATE_DIR } from "../../observe";
import { Guard, Plan, Step } from "../../render";
import { Script, sh, writeFile } from "../../shell";
import { BridgeAction, BridgeGuard, BridgePlan, stateFilePath } from "./plan";
import { BridgeOptions } from "./schema";

function optionWords(o: BridgeOptions): Script {
  const words: (string | number)[] = [];
  for (const [k, v] of Object.entries(o)) if (v !== undefined) words.push(k, v);
  return sh`${words}`;
}

function renderAction(a: BridgeAction): Step {
  switch (a.op) {
    case "create":
      return {
        description: `create bridge ${a.name}`,
        run: sh`ip link add name ${a.name} type bridge ${optionWords(a.options)}`,
        undo: sh`ip link del dev ${a.name}`,
      };
    case "setOptions":
      return {
        description: `set ${Object.keys(a.options).join(", ")} on bridge ${a.name}`,
        run: sh`ip link set dev ${a.name} type bridge ${optionWords(a.options)}`,
        undo: sh`ip link set dev ${a.name} type bridge ${optionWords(a.previous)}`,
      };
    case "setMtu":
      return {
        description: `set mtu ${a.mtu} on ${a.name}`,
        run: sh`ip link set dev ${a.name} mtu ${a.mtu}`,
        undo: a.previous !== undefined ? sh`ip link set dev ${a.name} mtu ${a.previous}` : undefined,
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
    case "addAddress":
      return {
        description: `add address ${a.cidr} to ${a.name}`,
        run: sh`ip addr add ${a.cidr} dev ${a.name}`,
        undo: sh`ip addr del ${a.cidr} dev ${a.name}`,
      };
    case "removeAddress":
      return {
        description: `remove address ${a.cidr} from ${a.name}`,
        run: sh`ip addr del ${a.cidr} dev ${a.name}`,
        undo: sh`ip addr add ${a.cidr} dev ${a.name}`,
      };
    case "up":
      return { description: `bring ${a.name} up`, run: sh`ip link set dev ${a.name} up`, undo: sh`ip link set dev ${a.name} down` };
    case "writeState": {
      const path = stateFilePath(a.name);
      const dir = path.slice(0, path.lastIndexOf("/"));
      return {
        description: `record state of ${a.name}`,
        run: sh`mkdir -p ${dir} && ${writeFile(path, JSON.stringify({ portsBroughtUp: a.portsBroughtUp }))}`,
        undo: a.previous.length > 0 ? writeFile(path, JSON.stringify({ portsBroughtUp: a.previous })) : sh`rm -f ${path}`,
      };
    }
    case "removeState":
      // Remove our directories too once empty (rmdir refuses non-empty ones).
      return { description: `remove state of ${a.name}`, run: sh`rm -f ${stateFilePath(a.name)} && { rmdir ${STATE_DIR}/bridge ${STATE_DIR} /run/kvmnet 2>/dev/null || true; }` };
    case "delete":
      return { description: `delete bridge ${a.name}`, run: sh`ip link del dev ${a.name}` };
  }
}

function renderGuard(g: BridgeGuard): Guard {
  switch (g.op) {
    case "absent":
      return {
        test: sh`! ip link show dev ${g.name} >/dev/null 2>&1`,
        kind: "Conflict",
        message: `an interface named ${g.name} appeared on the host while this change was planned`,
      };
    case "isBridge":
      return {
        test: sh`[ -d /sys/class/net/${g.name}/bridge ]`,
        kind: "Conflict",
        message: `${g.name} is no longer a bridge on the host`,
      };
    case "portAvailable":
      return {
        test: sh`ip link show dev ${g.port} >/dev/null 2>&1 && [ ! -e /sys/class/net/${g.port}/master ]`,
        kind: "Conflict",
        message: `port ${g.port} vanished or joined another master while this change was planned`,
      };
  }
}

export function renderBridgePlan(plan: BridgePlan): Plan {
  return { guards: plan.guards.map(renderGuard), steps: plan.actions.map(renderAction) };
}

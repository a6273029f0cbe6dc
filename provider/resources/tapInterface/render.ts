/** TapInterface actions → shell steps (values quoted by shell.ts only). */
import { Guard, Plan, Step } from "../../render";
import { Script, sh } from "../../shell";
import { absentGuard, bridgeExistsGuard, linkActionStep } from "../../linkSteps";
import { TapAction, TapGuard, TapIdentity, TapPlan } from "./plan";

/** The words of `ip tuntap add` for a tap of this identity (ip-tuntap(8)); ids and names alike go after user/group. */
export function tuntapAddArgs(name: string, id: TapIdentity): string[] {
  return [
    ...["dev", name, "mode", "tap"],
    ...(id.owner !== undefined ? ["user", id.owner] : []),
    ...(id.group !== undefined ? ["group", id.group] : []),
    ...(id.vnetHdr ? ["vnet_hdr"] : []),
    ...(id.multiQueue ? ["multi_queue"] : []),
  ];
}

function add(name: string, id: TapIdentity): Script {
  return sh`ip tuntap add ${tuntapAddArgs(name, id)}`;
}

/** `ip link del` removes a tap whatever its flags (`ip tuntap del` must repeat multi_queue). */
const del = (name: string) => sh`ip link del dev ${name}`;

function renderAction(a: TapAction): Step {
  switch (a.op) {
    case "create":
      return { description: `create tap ${a.name}`, run: add(a.name, a), undo: del(a.name) };
    case "recreate": {
      // Put back what was: the old identity, mtu, bridge and state (up: the tap existed and carried frames for someone).
      const restore = [
        sh`ip link del dev ${a.name} 2>/dev/null; ${add(a.name, a.was)}`,
        ...(a.mtu !== undefined ? [sh`ip link set dev ${a.name} mtu ${a.mtu}`] : []),
        ...(a.bridge !== undefined ? [sh`ip link set dev ${a.name} master ${a.bridge}`] : []),
        sh`ip link set dev ${a.name} up`,
      ];
      return {
        description: `make tap ${a.name} anew with the declared owner, group and flags (ip tuntap cannot change them in place)`,
        run: sh`${del(a.name)} && ${add(a.name, a.want)}`,
        cleanup: restore.reduce((acc, s) => sh`${acc}; ${s}`),
        undo: restore.reduce((acc, s) => sh`${acc}; ${s}`),
      };
    }
    default:
      return linkActionStep(a, "tap");
  }
}

function renderGuard(g: TapGuard): Guard {
  switch (g.op) {
    case "tunSupport":
      return { test: sh`[ -c /dev/net/tun ] || modprobe tun`, kind: "Unsupported", message: "the host has no /dev/net/tun (the tun module is missing)" };
    case "absent":
      return absentGuard(g.name);
    case "isTap":
      return { test: sh`[ -r /sys/class/net/${g.name}/tun_flags ]`, kind: "Conflict", message: `${g.name} is no longer a tap on the host` };
    case "userExists":
      return { test: sh`getent passwd ${g.user} >/dev/null`, kind: "NotFound", message: `tapInterface ${g.name}: owner ${g.user} is no user on the host (getent passwd)` };
    case "groupExists":
      return { test: sh`getent group ${g.group} >/dev/null`, kind: "NotFound", message: `tapInterface ${g.name}: group ${g.group} is no group on the host (getent group)` };
    case "bridgeExists":
      return bridgeExistsGuard(`tapInterface ${g.name}`, g.bridge);
  }
}

export function renderTapPlan(plan: TapPlan): Plan {
  return { guards: plan.guards.map(renderGuard), steps: plan.actions.map(renderAction) };
}

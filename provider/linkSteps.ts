/**
 * The `ip link` / `ip addr` steps and guards every kind that owns a link
 * renders the same way (Bridge, NatNetwork's bridge, VlanSubinterface, and
 * the kinds after them), so each is written once.
 */
import type { Guard, Step } from "./render";
import { sh } from "./shell";

/** Link actions that kinds owning a link plan alike (Bridge, VlanSubinterface, TapInterface); {@link linkActionStep} renders them. */
export type LinkAction =
  | { op: "setMtu"; name: string; mtu: number; previous?: number }
  | { op: "attach"; name: string; bridge: string; previous?: string }
  | { op: "detach"; name: string; bridge: string }
  | { op: "up"; name: string }
  | { op: "delete"; name: string };

/** Address changes on a link (Bridge, VlanSubinterface). */
export type AddressAction = { op: "addAddress"; name: string; cidr: string } | { op: "removeAddress"; name: string; cidr: string };

/** The step of a shared action; `label` ("bridge", "tap") names the kind of link in a delete's description. */
export function linkActionStep(a: LinkAction | AddressAction, label?: string): Step {
  switch (a.op) {
    case "setMtu":
      return setMtuStep(a.name, a.mtu, a.previous);
    case "attach":
      return attachStep(a.name, a.bridge, a.previous);
    case "detach":
      return detachStep(a.name, a.bridge);
    case "up":
      return linkUpStep(a.name);
    case "delete":
      return deleteLinkStep(a.name, label ? `${label} ${a.name}` : a.name);
    case "addAddress":
      return addAddressStep(a.name, a.cidr);
    case "removeAddress":
      return removeAddressStep(a.name, a.cidr);
  }
}

/** Set `name`'s MTU; undone to `previous` when it was known. */
export function setMtuStep(name: string, mtu: number, previous?: number): Step {
  return {
    description: `set mtu ${mtu} on ${name}`,
    run: sh`ip link set dev ${name} mtu ${mtu}`,
    undo: previous !== undefined ? sh`ip link set dev ${name} mtu ${previous}` : undefined,
  };
}

/** Add `cidr` to `name` (undone by removing it). */
export function addAddressStep(name: string, cidr: string): Step {
  return { description: `add address ${cidr} to ${name}`, run: sh`ip addr add ${cidr} dev ${name}`, undo: sh`ip addr del ${cidr} dev ${name}` };
}

/** Remove `cidr` from `name` (undone by adding it back). */
export function removeAddressStep(name: string, cidr: string): Step {
  return { description: `remove address ${cidr} from ${name}`, run: sh`ip addr del ${cidr} dev ${name}`, undo: sh`ip addr add ${cidr} dev ${name}` };
}

/** Bring `name` up (undone by bringing it down). */
export function linkUpStep(name: string): Step {
  return { description: `bring ${name} up`, run: sh`ip link set dev ${name} up`, undo: sh`ip link set dev ${name} down` };
}

/** Delete link `name`; `what` names it in the description ("bridge br0", or just "v10"). */
export function deleteLinkStep(name: string, what = name): Step {
  return { description: `delete ${what}`, run: sh`ip link del dev ${name}` };
}

/** No interface of this name exists (re-checked under the lock: the observe ran without it). */
export function absentGuard(name: string): Guard {
  return { test: sh`! ip link show dev ${name} >/dev/null 2>&1`, kind: "Conflict", message: `an interface named ${name} appeared on the host while this change was planned` };
}

/** `name` is still a bridge. */
export function isBridgeGuard(name: string): Guard {
  return { test: sh`[ -d /sys/class/net/${name}/bridge ]`, kind: "Conflict", message: `${name} is no longer a bridge on the host` };
}

/** Make `name` a port of `bridge`; undone by putting it back in `previous`, or in no bridge. */
export function attachStep(name: string, bridge: string, previous?: string): Step {
  return {
    description: `attach ${name} to bridge ${bridge}`,
    run: sh`ip link set dev ${name} master ${bridge}`,
    undo: previous !== undefined ? sh`ip link set dev ${name} master ${previous}` : sh`ip link set dev ${name} nomaster`,
  };
}

/** Take `name` out of `bridge` (undone by attaching it again). */
export function detachStep(name: string, bridge: string): Step {
  return { description: `detach ${name} from bridge ${bridge}`, run: sh`ip link set dev ${name} nomaster`, undo: sh`ip link set dev ${name} master ${bridge}` };
}

/** Bridge `bridge`, which `who` ("tapInterface tap0") is to join, exists (re-checked under the lock). */
export function bridgeExistsGuard(who: string, bridge: string): Guard {
  return {
    test: sh`[ -d /sys/class/net/${bridge}/bridge ]`,
    kind: "NotFound",
    message: `${who}: bridge ${bridge} does not exist on the host (create the Bridge first: pass its name output as bridge, or use dependsOn)`,
  };
}

/** Create bridge `name`, with MAC `mac` when given and `ip link` bridge options as words (`stp_state 1`); undone by deleting it. */
export function createBridgeStep(name: string, mac?: string, options: readonly (string | number)[] = []): Step {
  const add = mac ? sh`ip link add name ${name} address ${mac} type bridge` : sh`ip link add name ${name} type bridge`;
  return { description: `create bridge ${name}`, run: options.length > 0 ? sh`${add} ${options}` : add, undo: sh`ip link del dev ${name}` };
}

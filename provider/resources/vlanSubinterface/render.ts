/** VlanSubinterface actions → shell steps (values quoted by shell.ts only). */
import { STATE_DIR } from "../../observe";
import { absentGuard, bridgeExistsGuard, linkActionStep } from "../../linkSteps";
import { Guard, Plan, Step } from "../../render";
import { Script, sh } from "../../shell";
import { parentHoldFile, VLAN_STATE_DIR, VlanAction, VlanGuard, VlanPlan } from "./plan";

/**
 * Hold `parent` up for VLAN `name`: when it is down (IFF_UP, bit 0 of its
 * sysfs flags, is clear) or another of our VLANs already holds it. Decided
 * here, under the host lock, so two VLANs created at once agree.
 */
function holdParent(name: string, parent: string): Script {
  return sh`if [ $(( $(cat /sys/class/net/${parent}/flags) & 1 )) -eq 0 ] || grep -Fqsx -e ${parent} ${VLAN_STATE_DIR}/*.up; then mkdir -p ${VLAN_STATE_DIR} && printf '%s\\n' ${parent} > ${parentHoldFile(name)} && ip link set dev ${parent} up; fi`;
}

/**
 * Drop VLAN `name`'s hold on `parent`. The last holder out brings the parent
 * down again, unless an interface other than this VLAN sits on it (a VLAN made
 * by hand, a bridge: its sysfs `upper_*` links). Our empty directories go too.
 */
function releaseParent(name: string, parent: string): Script {
  return sh`kvmnet_down=; if [ -f ${parentHoldFile(name)} ]; then rm -f ${parentHoldFile(name)} && kvmnet_down=1; for u in /sys/class/net/${parent}/upper_*; do if [ -e "$u" ] && [ "\${u##*/upper_}" != ${name} ]; then kvmnet_down=; fi; done; if grep -Fqsx -e ${parent} ${VLAN_STATE_DIR}/*.up; then kvmnet_down=; fi; fi; rmdir ${VLAN_STATE_DIR} ${STATE_DIR} /run/kvmnet 2>/dev/null; if [ -n "$kvmnet_down" ]; then ip link set dev ${parent} down; else true; fi`;
}

function renderAction(a: VlanAction): Step {
  switch (a.op) {
    case "create":
      return {
        description: `create ${a.name}: VLAN ${a.vlanId} (${a.protocol}) on ${a.parent}`,
        run: sh`ip link add link ${a.parent} name ${a.name} type vlan id ${a.vlanId} protocol ${a.protocol}`,
        undo: sh`ip link del dev ${a.name}`,
      };
    case "holdParent":
      return { description: `bring parent ${a.parent} up (if down) for ${a.name}`, run: holdParent(a.name, a.parent), undo: releaseParent(a.name, a.parent) };
    case "releaseParent":
      return { description: `release parent ${a.parent} (down again if ${a.name} brought it up and nothing else uses it)`, run: releaseParent(a.name, a.parent) };
    default:
      return linkActionStep(a);
  }
}

function renderGuard(g: VlanGuard): Guard {
  switch (g.op) {
    case "vlanSupport":
      // /sys/module/8021q exists when the module is loaded or built in (it has a version).
      return {
        test: sh`[ -d /sys/module/8021q ] || modprobe 8021q`,
        kind: "Unsupported",
        message:
          "the host's kernel has no 802.1Q VLAN support: module 8021q is not loaded and `modprobe 8021q` failed " +
          "(install the kernel's modules package for the running kernel, or use a kernel built with CONFIG_VLAN_8021Q)",
      };
    case "absent":
      return absentGuard(g.name);
    case "isVlan":
      return { test: sh`grep -qsx DEVTYPE=vlan /sys/class/net/${g.name}/uevent`, kind: "Conflict", message: `${g.name} is no longer a VLAN sub-interface on the host` };
    case "parentExists":
      return {
        test: sh`[ -e /sys/class/net/${g.parent} ]`,
        kind: "NotFound",
        message: `vlanSubinterface ${g.name}: parent ${g.parent} vanished from the host while this change was planned`,
      };
    case "bridgeExists":
      return bridgeExistsGuard(`vlanSubinterface ${g.name}`, g.bridge);
  }
}

export function renderVlanPlan(plan: VlanPlan): Plan {
  return { guards: plan.guards.map(renderGuard), steps: plan.actions.map(renderAction) };
}

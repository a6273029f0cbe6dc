/** VlanSubinterface inputs: the zod schema (check), with the default name filled in. */
import { z } from "zod";
import { nicModel } from "../../attach";
import { libvirtSettings } from "../../libvirt";
import { resourceConnection } from "../../host/connection";
import { ifname, interfaceCidr, storedIfname } from "../../validate";
import { DEFAULT_PERSISTENCE, persistence } from "../../persist";

/** Tag protocols, spelled as `ip -d link` prints them. */
export const vlanProtocol = z.enum(["802.1Q", "802.1ad"], {
  error: () => ({ message: 'must be "802.1Q" (a VLAN tag, the default) or "802.1ad" (a QinQ service tag)' }),
});
export type VlanProtocol = z.output<typeof vlanProtocol>;

/** Linux IFNAMSIZ 16, with the terminating NUL. */
const MAX_IFNAME = 15;

/** `<parent>.<vid>`, the name `ip link` users and ifupdown give a VLAN. */
export function defaultVlanName(parent: string, vlanId: number): string {
  return `${parent}.${vlanId}`;
}

/** The schema, with `ifnameRule` the rule for every interface name in it. */
function vlanSchema(ifnameRule: z.ZodType<string, string>) {
  return z
    .object({
      connection: resourceConnection,
      parent: ifnameRule
        .describe("The interface that carries the tagged frames (a NIC, a bond, a bridge, or another VLAN for QinQ); must exist, not `lo`.")
        .meta({ onChange: "replace" }),
      vlanId: z
        .number()
        .int("must be a whole number")
        .min(1, "must be 1–4094 (0 and 4095 are reserved by 802.1Q)")
        .max(4094, "must be 1–4094 (0 and 4095 are reserved by 802.1Q)")
        .describe("VLAN id, 1–4094.")
        .meta({ onChange: "replace" }),
      name: ifnameRule.optional().describe("Interface name; required when the default is over 15 characters.").meta({ docDefault: "`<parent>.<vlanId>`", onChange: "replace" }),
      protocol: vlanProtocol.default("802.1Q").describe('Tag protocol: `"802.1Q"` or `"802.1ad"` (QinQ service tag, TPID 0x88a8).').meta({ onChange: "replace" }),
      mtu: z
        .number()
        .int()
        .min(68)
        .max(65535)
        .optional()
        .describe("68–65535 and at most the parent's MTU (checked against the host before anything changes). Unset: left as the host has it.")
        .meta({ docDefault: "kernel's (the parent's)" }),
      addresses: z
        .array(interfaceCidr)
        .default([])
        .describe(
          'CIDR addresses, "at least these", with the same rules as Bridge `addresses`: others on the interface are left alone, one removed from the list ' +
            "is removed. Must be empty when `bridge` is set.",
        ),
      bridge: ifnameRule
        .optional()
        .describe("Make the VLAN a port of this bridge, which must already exist: pass the Bridge's `name` output (or `dependsOn` it). Removing it detaches the VLAN."),
      // What this resource's own interrupted create made is taken over without adopt: lifecycle's creation record.
      adopt: z
        .boolean()
        .default(false)
        .describe(
          "Manage an existing VLAN of this name with the same parent, id and protocol instead of failing with a Conflict: its settings become " +
            "the declared ones, and delete removes it. Not needed for a VLAN this resource's own interrupted create made.",
        ),
      persistence: persistence
        .default(DEFAULT_PERSISTENCE)
        .describe(
          '`"runtime"` (until reboot), `"auto"`, `"networkd"` (needs networkd to manage the parent: a drop-in adds `VLAN=`), `"networkmanager"` ' +
            '(parent managed by NM; 802.1ad from NM 1.42), `"ifupdown"` (`interfaces.d` must be `source`d). What a stack could not bring back at boot ' +
            "is refused before anything changes. Delete removes every file.",
        ),
      libvirt: libvirtSettings
        .optional()
        .describe(
          "Register a libvirt network for VMs to attach to by name: of the host-bridge form on `bridge` when the VLAN is in one, else macvtap (`<forward mode='bridge'><interface dev='…'/>`) on the VLAN itself. Needs libvirtd on the host.",
        )
        .meta({ docDefault: "not registered" }),
      model: nicModel
        .default("virtio-net-pci")
        .describe('The guest NIC model in `libvirtInterfaceXml` and `qemuNetdevArgs`: `"virtio-net-pci"`, `"e1000"` or `"rtl8139"`. Nothing on the host depends on it.'),
    })
    .strict()
    .superRefine((v, ctx) => {
      if (v.parent === "lo") ctx.addIssue({ code: "custom", path: ["parent"], message: "the loopback interface cannot carry VLANs" });
      const name = v.name ?? defaultVlanName(v.parent, v.vlanId);
      // Only a valid parent makes a default worth judging (an unknown one, during preview, is not yet).
      if (v.name === undefined && ifnameRule.safeParse(v.parent).success && name.length > MAX_IFNAME) {
        ctx.addIssue({
          code: "custom",
          path: ["name"],
          message: `is required here: the default ${JSON.stringify(name)} is over ${MAX_IFNAME} characters (Linux IFNAMSIZ); give a shorter name`,
        });
      }
      if (name === v.parent) ctx.addIssue({ code: "custom", path: ["name"], message: "must differ from parent" });
      if (v.bridge !== undefined && (v.bridge === name || v.bridge === v.parent)) {
        ctx.addIssue({ code: "custom", path: ["bridge"], message: "must be another interface than the VLAN and its parent" });
      }
      if (v.bridge !== undefined && v.addresses.length > 0) {
        ctx.addIssue({
          code: "custom",
          path: ["addresses"],
          message: "must be empty when bridge is set: a bridge port's own addresses stop working; put them on the bridge (Bridge.addresses)",
        });
      }
      const seen = new Set<string>();
      v.addresses.forEach((a, i) => {
        if (seen.has(a)) ctx.addIssue({ code: "custom", path: ["addresses", i], message: `lists ${a} twice` });
        seen.add(a);
      });
    })
    .transform((v) => ({ ...v, name: v.name ?? defaultVlanName(v.parent, v.vlanId) }));
}

/** A program's inputs: check, create and update. */
export const vlanSubinterfaceInputsSchema = vlanSchema(ifname);

/** Stored state, which may hold names written before #14's rules (see storedIfname). */
export const vlanSubinterfaceStoredSchema = vlanSchema(storedIfname);

export type VlanSubinterfaceInputs = z.output<typeof vlanSubinterfaceInputsSchema>;

/** TapInterface inputs: the zod schema (check), with the owner and group ids normalised to strings. */
import { z } from "zod";
import { resourceConnection } from "../../host/connection";
import { DEFAULT_PERSISTENCE, persistence } from "../../persist";
import { ifname, macAddress, storedIfname } from "../../validate";

/** The NIC models QEMU's `-device` takes for a tap netdev that we render: every attach snippet's. */
import { NIC_MODELS, nicModel, NicModel } from "../../attach";
export const TAP_MODELS = NIC_MODELS;
export const tapModel = nicModel;
export type TapModel = NicModel;

/** The largest id a user or group may have: (uid_t)-1 means "none" to the kernel (tun's TUNSETOWNER). */
const MAX_ID = 4294967294;

/**
 * A user or group: a name as shadow-utils' useradd accepts by default
 * (lower-case letter or '_' first, then letters, digits, '_', '-', at most
 * 32; a trailing '$' for machine accounts), or a numeric id. A number or a
 * string of digits is an id, as `ip tuntap add user` reads it. Normalised to
 * a string, so one spelling reaches state and the host.
 */
function principal(what: "user" | "group") {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    const s = typeof v === "number" ? String(v) : v;
    if (/^\d+$/.test(s)) {
      if (Number(s) > MAX_ID || (typeof v === "number" && !Number.isInteger(v))) ctx.addIssue({ code: "custom", message: `must be a ${what} id 0–${MAX_ID}` });
      return String(Number(s));
    }
    if (!/^[a-z_][a-z0-9_-]{0,31}\$?$/.test(s) || s.length > 32) {
      ctx.addIssue({ code: "custom", message: `must be a ${what} name (a lower-case letter or '_', then letters, digits, '_' or '-', at most 32) or a numeric ${what} id` });
    }
    return s;
  });
}

/** The schema, with `ifnameRule` the rule for every interface name in it. */
function tapSchema(ifnameRule: z.ZodType<string, string>) {
  return z
    .object({
      connection: resourceConnection,
      name: ifnameRule.describe("Interface name of the tap (what QEMU's `ifname=` names).").meta({ onChange: "replace" }),
      owner: principal("user")
        .optional()
        .describe("The user allowed to open the tap without CAP_NET_ADMIN (an unprivileged QEMU): a user name or a numeric uid. Unset: root only.")
        .meta({ onChange: "replace" }),
      group: principal("group").optional().describe("The group whose members may open the tap: a group name or a numeric gid. Unset: no group.").meta({ onChange: "replace" }),
      multiQueue: z
        .boolean()
        .default(false)
        .describe("Make a multi-queue tap (IFF_MULTI_QUEUE): every opener must ask for it, and QEMU needs `queues=` (see `queues`).")
        .meta({ onChange: "replace" }),
      vnetHdr: z
        .boolean()
        .default(false)
        .describe("Give frames a virtio-net header (IFF_VNET_HDR), what virtio-net with offloads expects; QEMU is told `vnet_hdr=on`.")
        .meta({ onChange: "replace" }),
      mtu: z.number().int().min(68).max(65521).optional().describe("MTU of the tap, 68–65521. Unset: left as the host has it.").meta({ docDefault: "kernel's (1500)" }),
      bridge: ifnameRule
        .optional()
        .describe(
          "Make the tap a port of this bridge (a Bridge's `name`, or a NatNetwork's `bridgeName`), which must already exist: pass that output (or `dependsOn`). Removing it detaches the tap.",
        ),
      model: tapModel.default("virtio-net-pci").describe('The guest NIC in `qemuNetdevArgs`: `"virtio-net-pci"`, `"e1000"` or `"rtl8139"`. Nothing on the host depends on it.'),
      guestMac: macAddress
        .optional()
        .describe("The guest NIC's MAC in `qemuNetdevArgs`. Nothing on the host depends on it.")
        .meta({ docDefault: "52:54:00 and three bytes of a hash of the host and name" }),
      queues: z
        .number()
        .int()
        .min(2)
        .max(256)
        .optional()
        .describe("Queue pairs QEMU opens on a multi-queue tap (`queues=` and `mq=on` in `qemuNetdevArgs`); only with `multiQueue`.")
        .meta({ docDefault: "2 when `multiQueue`" }),
      // What this resource's own interrupted create made is taken over without adopt: lifecycle's creation record.
      adopt: z
        .boolean()
        .default(false)
        .describe(
          "Manage an existing tap of this name instead of failing with a Conflict: one whose owner, group or flags differ is made anew with the declared ones, and delete removes it.",
        ),
      persistence: persistence
        .default(DEFAULT_PERSISTENCE)
        .describe(
          '`"runtime"` (until reboot), `"auto"`, `"networkd"` (a `.netdev` of Kind=tap), `"networkmanager"` (a connection of type tun), `"ifupdown"` ' +
            "(`interfaces.d` must be `source`d). What a stack could not bring back at boot is refused before anything changes. Delete removes every file.",
        ),
    })
    .strict()
    .superRefine((v, ctx) => {
      if (v.bridge !== undefined && v.bridge === v.name) ctx.addIssue({ code: "custom", path: ["bridge"], message: "must be another interface than the tap" });
      if (v.queues !== undefined && !v.multiQueue) ctx.addIssue({ code: "custom", path: ["queues"], message: "needs multiQueue: true (a single-queue tap takes one queue)" });
    });
}

/** A program's inputs: check, create and update. */
export const tapInterfaceInputsSchema = tapSchema(ifname);

/** Stored state, read with the ifname rule of the other kinds' stored state (see storedIfname). */
export const tapInterfaceStoredSchema = tapSchema(storedIfname);

export type TapInterfaceInputs = z.output<typeof tapInterfaceInputsSchema>;

/** Bridge inputs: the zod schema (check) and the kernel units they map to. */
import { z } from "zod";
import { connectionSchema } from "../../host/connection";
import { DEFAULT_PERSISTENCE, persistence } from "../../persist";
import { ifname, interfaceCidr, macAddress, storedIfname } from "../../validate";

/** Seconds with the kernel's resolution (centiseconds, USER_HZ 100). */
const seconds = (min: number, max: number) =>
  z
    .number()
    .min(min, `must be at least ${min} seconds`)
    .max(max, `must be at most ${max} seconds`)
    .refine((v) => Math.abs(Math.round(v * 100) - v * 100) < 1e-6, "must be a multiple of 0.01 seconds (the kernel counts in centiseconds)");

export { persistence };

/**
 * A port's persisted files are named `<the bridge's stem>-port-<port>`
 * (05-kvmnet-bridge-x-port-y.network, kvmnet-bridge-x-port-y.nmconnection,
 * whose id also seeds the profile's UUID), so a bridge named "x-port-y" would
 * own the same paths and profile as bridge "x"'s port "y".
 */
const bridgeName = ifname.refine((s) => !s.includes("-port-"), 'must not contain "-port-" (its persisted files would be those of another bridge\'s port)');

/** The rules for the bridge's name and its ports' names. */
interface NameRules {
  name: z.ZodType<string, string>;
  port: z.ZodType<string, string>;
}

function bridgeSchema(names: NameRules) {
  return z
    .object({
      connection: connectionSchema,
      name: names.name,
      stp: z.boolean().default(false),
      forwardDelay: seconds(0, 30).optional(),
      helloTime: seconds(1, 10).optional(),
      maxAge: seconds(6, 40).optional(),
      priority: z.number().int().min(0).max(65535).optional(),
      ageingTime: seconds(0, 1_000_000).optional(),
      mtu: z.number().int().min(68).max(65535).optional(),
      macAddress: macAddress.optional(),
      vlanFiltering: z.boolean().optional(),
      ports: z.array(names.port).default([]),
      addresses: z.array(interfaceCidr).default([]),
      /**
       * Manage an existing bridge of this name, made by hand or by another
       * tool, instead of a Conflict: its settings become the declared ones. What this
       * resource's own interrupted create made is taken over without it (lifecycle's creation record).
       */
      adopt: z.boolean().default(false),
      /**
       * Allow ports that carry addresses or routes — the uplink NIC, even the one
       * the SSH session runs over: their addresses and routes move onto the
       * bridge, under commit-confirm (provider/confirm.ts).
       */
      takeOverUplink: z.boolean().default(false),
      /** Seconds the host waits for a new SSH connection to confirm a change of the management path before it reverts it. */
      confirmTimeoutSec: z.number().int().min(15, "must be at least 15 seconds").max(3600, "must be at most 3600 seconds").default(60),
      persistence: persistence.default(DEFAULT_PERSISTENCE),
    })
    .strict()
    .superRefine((b, ctx) => {
      if (b.stp && b.forwardDelay !== undefined && b.forwardDelay < 2) {
        ctx.addIssue({ code: "custom", path: ["forwardDelay"], message: "must be 2–30 seconds when stp is on (kernel limit)" });
      }
      const seenPorts = new Set<string>();
      b.ports.forEach((p, i) => {
        if (p === b.name) ctx.addIssue({ code: "custom", path: ["ports", i], message: "a bridge cannot be its own port" });
        if (p === "lo") ctx.addIssue({ code: "custom", path: ["ports", i], message: "the loopback interface cannot be a bridge port" });
        if (seenPorts.has(p)) ctx.addIssue({ code: "custom", path: ["ports", i], message: `lists ${p} twice` });
        seenPorts.add(p);
      });
      const seenAddrs = new Set<string>();
      b.addresses.forEach((a, i) => {
        if (seenAddrs.has(a)) ctx.addIssue({ code: "custom", path: ["addresses", i], message: `lists ${a} twice` });
        seenAddrs.add(a);
      });
    });
}

/** A program's inputs: check, create and update. */
export const bridgeInputsSchema = bridgeSchema({ name: bridgeName, port: ifname });

/** Stored state, which may hold names written before #14's rules (see storedIfname). */
export const bridgeStoredSchema = bridgeSchema({ name: storedIfname, port: storedIfname });

export type BridgeInputs = z.output<typeof bridgeInputsSchema>;

/** Kernel bridge attributes we manage, as `ip link … type bridge` names them, in kernel units. */
export interface BridgeOptions {
  stp_state?: number;
  forward_delay?: number;
  hello_time?: number;
  max_age?: number;
  priority?: number;
  ageing_time?: number;
  vlan_filtering?: number;
}

const cs = (s: number | undefined) => (s === undefined ? undefined : Math.round(s * 100));
const bit = (b: boolean | undefined) => (b === undefined ? undefined : b ? 1 : 0);

/** The managed options of `b` in kernel units; unset inputs are left out (unmanaged). */
export function desiredOptions(b: BridgeInputs): BridgeOptions {
  const o: BridgeOptions = {
    stp_state: bit(b.stp),
    forward_delay: cs(b.forwardDelay),
    hello_time: cs(b.helloTime),
    max_age: cs(b.maxAge),
    priority: b.priority,
    ageing_time: cs(b.ageingTime),
    vlan_filtering: bit(b.vlanFiltering),
  };
  for (const k of Object.keys(o) as (keyof BridgeOptions)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** Input field name for each kernel option (for messages and read-back). */
export const OPTION_FIELDS: Record<keyof BridgeOptions, keyof BridgeInputs> = {
  stp_state: "stp",
  forward_delay: "forwardDelay",
  hello_time: "helloTime",
  max_age: "maxAge",
  priority: "priority",
  ageing_time: "ageingTime",
  vlan_filtering: "vlanFiltering",
};

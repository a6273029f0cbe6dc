/**
 * The input schema of every kind of the registry (provider/identity.ts): the
 * one declaration of its fields, which the kind's lifecycle (input keys), the
 * SDK (which outputs to register) and the docs (scripts/docs.ts) all read.
 * Only schemas are imported here, so the SDK can load it in the program process.
 */
import type { z } from "zod";
import type { KindName } from "../identity";
import { bridgeInputsSchema } from "./bridge/schema";
import { natNetworkInputsSchema } from "./natNetwork/schema";
import { pciPassthroughInputsSchema } from "./pciPassthrough/schema";
import { portForwardInputsSchema } from "./portForward/schema";
import { tapInterfaceInputsSchema } from "./tapInterface/schema";
import { vlanSubinterfaceInputsSchema } from "./vlanSubinterface/schema";

/** A program's input schema per kind: a kind without one does not compile. */
export const INPUT_SCHEMAS = {
  bridge: bridgeInputsSchema,
  natNetwork: natNetworkInputsSchema,
  pciPassthrough: pciPassthroughInputsSchema,
  portForward: portForwardInputsSchema,
  vlanSubinterface: vlanSubinterfaceInputsSchema,
  tapInterface: tapInterfaceInputsSchema,
} as const satisfies { readonly [K in KindName]: z.ZodType };

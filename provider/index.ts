/**
 * What the SDK's serialized provider closures `require` inside the
 * dynamic-provider process: one provider object per resource kind.
 *
 * This module is loaded from node_modules (never serialized), so the SSH pool
 * it holds is shared by every resource of a deployment.
 */
import { bridgeProvider } from "./resources/bridge";
import { natNetworkProvider } from "./resources/natNetwork";
import { pciPassthroughProvider } from "./resources/pciPassthrough";
import { portForwardProvider } from "./resources/portForward";
import { vlanSubinterfaceProvider } from "./resources/vlanSubinterface";

export const kinds = {
  bridge: bridgeProvider,
  natNetwork: natNetworkProvider,
  pciPassthrough: pciPassthroughProvider,
  portForward: portForwardProvider,
  vlanSubinterface: vlanSubinterfaceProvider,
};

export type KindName = keyof typeof kinds;
export { KvmnetError, isKvmnetError, KVMNET_ERROR } from "./errors";
export { closeAllConnections, poolStats } from "./host";

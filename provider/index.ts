/**
 * What the SDK's serialized provider closures `require` inside the
 * dynamic-provider process: one provider object per resource kind.
 *
 * This module is loaded from node_modules (never serialized), so the SSH pool
 * it holds is shared by every resource of a deployment.
 */
import type { KindName } from "./identity";
import type { KindProvider } from "./resources/kind";
import { bridgeProvider } from "./resources/bridge";
import { natNetworkProvider } from "./resources/natNetwork";
import { pciPassthroughProvider } from "./resources/pciPassthrough";
import { portForwardProvider } from "./resources/portForward";
import { tapInterfaceProvider } from "./resources/tapInterface";
import { vlanSubinterfaceProvider } from "./resources/vlanSubinterface";

/** The provider object of every kind of the registry (provider/identity.ts): a kind without one does not compile. */
export const kinds: { readonly [K in KindName]: KindProvider } = {
  bridge: bridgeProvider,
  natNetwork: natNetworkProvider,
  pciPassthrough: pciPassthroughProvider,
  portForward: portForwardProvider,
  vlanSubinterface: vlanSubinterfaceProvider,
  tapInterface: tapInterfaceProvider,
};

export type { KindName } from "./identity";
export type { KindProvider } from "./resources/kind";
export { KvmnetError, isKvmnetError, KVMNET_ERROR } from "./errors";
export { closeAllConnections, poolStats } from "./host";

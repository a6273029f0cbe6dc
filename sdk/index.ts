/**
 * pulumi-kvmnet: KVM-host networking as Pulumi resources, managed over SSH.
 */
export { Bridge } from "./bridge";
export type { BridgeArgs } from "./bridge";
export { NatNetwork } from "./natNetwork";
export type { NatNetworkArgs, NatNetworkMode } from "./natNetwork";
export { PciPassthrough } from "./pciPassthrough";
export type { PciPassthroughArgs } from "./pciPassthrough";
export { PortForward } from "./portForward";
export type { PortForwardArgs } from "./portForward";
export { TapInterface } from "./tapInterface";
export type { TapInterfaceArgs, TapModel } from "./tapInterface";
export { VlanSubinterface } from "./vlanSubinterface";
export type { VlanProtocol, VlanSubinterfaceArgs } from "./vlanSubinterface";
export * as types from "./types";
export type { Connection, LibvirtRegistration, NicModel, Persistence } from "./types";

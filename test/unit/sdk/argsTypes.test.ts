import type * as pulumi from "@pulumi/pulumi";
import type { z } from "zod";
import type { BridgeArgs, NatNetworkArgs, PciPassthroughArgs, PortForwardArgs, TapInterfaceArgs, VlanSubinterfaceArgs } from "../../../sdk";
import type { NatNetworkDhcp, NatNetworkDhcpHost, NatNetworkDns, NatNetworkDnsHost } from "../../../sdk/natNetwork";
import type { Connection } from "../../../sdk/types";
import type { ConnectionInput } from "../../../provider/host";
import type { INPUT_SCHEMAS } from "../../../provider/resources/inputs";
import type { natNetworkSettingsSchemas as nested } from "../../../provider/resources/natNetwork/schema";

/** True when each of A and B is assignable to the other. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** What a program's Args hold once every Input is resolved. */
type Plain<T> = pulumi.Unwrap<T>;
/**
 * A kind's schema input without `connection` (the connection schema is
 * recursive and typed by hand: ConnectionInput, checked on its own) and
 * `dhcp` (parsed from unknown, to report nested issues: checked on its own).
 */
type SchemaInput<K extends keyof typeof INPUT_SCHEMAS> = Omit<z.input<(typeof INPUT_SCHEMAS)[K]>, "connection" | "dhcp">;
type ArgsInput<A> = Omit<Plain<A>, "connection" | "dhcp">;

/**
 * #17 item 5: the SDK's Args types are written by hand (they carry pulumi.Input
 * and JSDoc); scripts/docs.ts holds their field names and optionality to the
 * schemas, and this holds their types: each resolves to exactly what the
 * schema accepts. `tsc -p test/tsconfig.json` (npm run typecheck) fails here on
 * a type that drifted; the test below only keeps jest aware of the file.
 */
const sameTypes: {
  connection: Same<Plain<Connection>, ConnectionInput>;
  bridge: Same<ArgsInput<BridgeArgs>, SchemaInput<"bridge">>;
  natNetwork: Same<ArgsInput<NatNetworkArgs>, SchemaInput<"natNetwork">>;
  natNetworkDhcp: Same<Plain<NatNetworkArgs>["dhcp"], false | z.input<typeof nested.dhcp> | undefined>;
  dhcp: Same<Plain<NatNetworkDhcp>, z.input<typeof nested.dhcp>>;
  dhcpHost: Same<Plain<NatNetworkDhcpHost>, z.input<typeof nested.dhcpHost>>;
  dns: Same<Plain<NatNetworkDns>, z.input<typeof nested.dns>>;
  dnsHost: Same<Plain<NatNetworkDnsHost>, z.input<typeof nested.dnsHost>>;
  pciPassthrough: Same<ArgsInput<PciPassthroughArgs>, SchemaInput<"pciPassthrough">>;
  portForward: Same<ArgsInput<PortForwardArgs>, SchemaInput<"portForward">>;
  vlanSubinterface: Same<ArgsInput<VlanSubinterfaceArgs>, SchemaInput<"vlanSubinterface">>;
  tapInterface: Same<ArgsInput<TapInterfaceArgs>, SchemaInput<"tapInterface">>;
} = {
  connection: true,
  bridge: true,
  natNetwork: true,
  natNetworkDhcp: true,
  dhcp: true,
  dhcpHost: true,
  dns: true,
  dnsHost: true,
  pciPassthrough: true,
  portForward: true,
  vlanSubinterface: true,
  tapInterface: true,
};

it("the SDK's Args types resolve to what the schemas accept (checked by tsc)", () => {
  expect(Object.values(sameTypes).every((v) => v)).toBe(true);
});

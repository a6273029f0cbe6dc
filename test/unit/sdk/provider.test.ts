import * as pulumi from "@pulumi/pulumi";
import { Bridge, NatNetwork, PortForward } from "../../../sdk";
import { refuseLiteralUnknown } from "../../../sdk/provider";
import { UNKNOWN } from "../../../provider/validate";

/**
 * #14 item 13: the provider's check cannot tell the engine's unknown
 * placeholder from the same string typed into a program, but the program can:
 * a value not known yet reaches it as an Output, never as that string. So a
 * plain value holding it is refused when the resource is declared (preview
 * included), naming the field, before anything is registered.
 */
describe("declaring a resource with the unknown placeholder typed as a value", () => {
  const connection = { host: "kvm1.example.net" };
  it.each([
    ["Bridge name", () => new Bridge("b", { connection, name: UNKNOWN }), /kvmnet:Bridge b: name: .*placeholder/],
    ["Bridge ports[1]", () => new Bridge("b", { connection, name: "br0", ports: ["eth1", UNKNOWN] }), /ports\.1: .*placeholder/],
    ["Bridge connection.host", () => new Bridge("b", { connection: { host: UNKNOWN }, name: "br0" }), /connection\.host: .*placeholder/],
    [
      "NatNetwork dhcp.hosts[0].hostname",
      () =>
        new NatNetwork("n", {
          connection,
          name: "lab",
          subnet: "10.0.0.0/24",
          dhcp: { start: "10.0.0.10", end: "10.0.0.20", hosts: [{ mac: "52:54:00:00:00:01", ip: "10.0.0.5", hostname: UNKNOWN }] },
        }),
      /kvmnet:NatNetwork n: dhcp\.hosts\.0\.hostname: .*placeholder/,
    ],
    [
      "PortForward description",
      () => new PortForward("p", { connection, protocol: "tcp", hostPort: 8080, destination: "10.0.0.5", description: UNKNOWN }),
      /description: .*placeholder/,
    ],
  ])("%s is refused", (_label, declare, re) => {
    expect(declare).toThrow(re);
  });

  it("leaves Outputs alone (an unknown arrives as one)", () => {
    expect(() => refuseLiteralUnknown("Bridge", "b", { connection, name: pulumi.output("br0"), ports: [pulumi.output("eth1")] })).not.toThrow();
  });
});

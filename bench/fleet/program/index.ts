// bench/fleet's workload, written as a user would: per host, `bridges` bridges with
// mtu 1400, STP off, up, one address each; the first with one port (kvbp0, a veth the bench gives each host).
import * as pulumi from "@pulumi/pulumi";
import * as kvmnet from "pulumi-kvmnet";

const cfg = new pulumi.Config();
const hosts = cfg.requireObject<{ host: string; hostKey: string }[]>("hosts");
const sshKey = cfg.requireSecret("sshKey");
const perHost = cfg.getNumber("bridges") ?? 5;

export const count = hosts.flatMap((h, i) => {
  const connection: kvmnet.types.Connection = { host: h.host, user: "root", hostKey: h.hostKey, privateKey: sshKey };
  return Array.from(
    { length: perHost },
    (_, b) =>
      new kvmnet.Bridge(`h${i}-kvb${b}`, {
        connection,
        name: `kvb${b}`,
        mtu: 1400,
        stp: false,
        addresses: [`10.77.${b}.1/24`],
        ports: b === 0 ? ["kvbp0"] : [],
      }),
  );
}).length;

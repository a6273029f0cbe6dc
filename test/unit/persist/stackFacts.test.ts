/**
 * The stack-facts section's script (its awk INI readers above all), run by a
 * real sh and awk over a tree of configuration files, and read back by
 * stackFacts(): what the backends decide from is what the files say.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../provider/observe";
import { HOST_STACK_PATHS, STACK_FACTS_SECTION, stackFacts, stackFactsScript } from "../../../provider/persist/stackFacts";

const fixture = fs.readFileSync(path.join(__dirname, "../../fixtures/observe/vlan-eth1-v10-v20.txt"), "utf8");

let root: string;
const put = (rel: string, text: string) => {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, text);
  return p;
};
const tree = () => ({
  netifLinks: path.join(root, "run/netif/links"),
  networkdDirs: [path.join(root, "etc/network.d"), path.join(root, "usr/network.d")],
  networkdDir: path.join(root, "etc/network.d"),
  interfaces: path.join(root, "etc/interfaces"),
  nmProfileDirs: [path.join(root, "etc/nm"), path.join(root, "run/nm")],
});
/** The section as the host would print it, read back through a snapshot of the fixture host (eth1 is ifindex 3). */
function run(): { text: string; snap: HostSnapshot } {
  const text = execFileSync("sh", ["-c", stackFactsScript(tree())], { encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
  return { text, snap: parseSnapshot(`${fixture}\n@@kvmnet-begin ${STACK_FACTS_SECTION}\n${text}@@kvmnet-end ${STACK_FACTS_SECTION} 0\n`, "fixture") };
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-facts-"));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe("stack facts, from files by sh and awk", () => {
  it("reads [NetDev] Name= and Kind= as networkd does: blanks ignored, other sections ignored, the last assignment wins", () => {
    const a = put("etc/network.d/05-kvmnet-bridge-br10.netdev", "# c\n[NetDev]\nName=br10\nKind=bridge\n\n[Bridge]\nSTP=no\n");
    const b = put("usr/network.d/20 spaced.netdev", "[Match]\nName=zz\n\n  [ NetDev ]  \n  Name =  vl1  \nKind=vlan\nKind = macvlan\n[VLAN]\nKind=nope\n");
    const c = put("usr/network.d/empty.netdev", "");
    put("usr/network.d/not-a-netdev.network", "[NetDev]\nName=x\n");
    const facts = stackFacts(run().snap);
    expect(facts.netdevs).toEqual([
      { kind: "bridge", name: "br10", path: a },
      { kind: "macvlan", name: "vl1", path: b },
      { kind: "-", name: "-", path: c },
    ]);
  });

  it("reads a keyfile's [connection] type= and interface-name=, marks NetworkManager's generated profiles, and prints nothing else of it", () => {
    const saved = put("etc/nm/my bridge.nmconnection", "[connection]\nid=x\ntype=bridge\ninterface-name=br10\n\n[wifi-security]\npsk=secret-words\n");
    put("etc/nm/eth.nmconnection", "[ethernet]\ntype=ignored\n[connection]\ntype=ethernet\n");
    put("run/nm/gen.nmconnection", "[connection]\ntype=vlan\ninterface-name=eth1.10\n[.nmmeta]\nnm-generated=true\n");
    const { text, snap } = run();
    expect(text).not.toContain("secret");
    expect(stackFacts(snap).nmProfiles).toEqual([
      { type: "ethernet", interfaceName: undefined, path: path.join(root, "etc/nm/eth.nmconnection") },
      { type: "bridge", interfaceName: "br10", path: saved },
    ]);
    expect(text).toContain(`nmprofile vlan eth1.10 generated ${path.join(root, "run/nm/gen.nmconnection")}`);
  });

  it("reads the .network networkd applied to each link, our own .network files, and the interfaces file's source lines", () => {
    put("run/netif/links/3", "ADMIN_STATE=configured\nNETWORK_FILE=/etc/systemd/network/10-trunk.network\n");
    put("run/netif/links/1", "ADMIN_STATE=unmanaged\n");
    const ours = put("etc/network.d/05-kvmnet-vlan-eth1.10.network", "[Match]\nName=eth1.10\n");
    put("etc/network.d/10-admin.network", "[Match]\nName=eth1\n");
    put("etc/interfaces", "auto lo\n  source /etc/network/interfaces.d/*\nsource-directory /etc/network/more\n# source no\n");
    const facts = stackFacts(run().snap);
    expect(facts.networkFiles).toEqual(new Map([["eth1", "/etc/systemd/network/10-trunk.network"]]));
    expect(facts.ourNetworkFiles).toEqual([ours]);
    expect(facts.ifupdownSources).toEqual(["source /etc/network/interfaces.d/*", "source-directory /etc/network/more"]);
  });

  it("an empty tree gives empty facts, and the host's script reads the host's paths", () => {
    expect(stackFacts(run().snap)).toMatchObject({ networkFiles: new Map(), ourNetworkFiles: [], netdevs: [], ifupdownSources: [], nmProfiles: [] });
    const script = stackFactsScript();
    for (const p of [HOST_STACK_PATHS.netifLinks, ...HOST_STACK_PATHS.networkdDirs, ...HOST_STACK_PATHS.nmProfileDirs, HOST_STACK_PATHS.interfaces])
      expect(script).toContain(`'${p}'`);
  });
});

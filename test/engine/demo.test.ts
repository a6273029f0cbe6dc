/**
 * `npm run demo` as a new user runs it (minus the build, which npm test has
 * done): it must exit 0 and show the product working from outside — the
 * guest's pinned lease, the upstream client's answer through the forward —
 * and nothing left afterwards.
 */
import * as path from "path";
import { REPO, run } from "../../testbed/engine";

jest.setTimeout(900_000);

it("runs the demo: a lease, a forward reached from upstream, nothing left", async () => {
  const r = await run(process.execPath, [path.join(REPO, "node_modules", "tsx", "dist", "cli.mjs"), path.join(REPO, "scripts", "demo.ts")], { cwd: REPO, timeoutMs: 900_000 });
  const out = r.stdout + r.stderr;
  expect({ code: r.code, tail: r.code === 0 ? "" : out.slice(-4000) }).toEqual({ code: 0, tail: "" });
  expect(out).toContain("got 192.168.122.10 from the network's dnsmasq");
  expect(out).toMatch(/guest answered: peer=198\.19\.0\.1\n\s*guest answered: hello-from-upstream/);
  expect(out).toContain("Nothing of ours is left on the host");
  expect(out).toContain("connection to :8443 is refused now");
});

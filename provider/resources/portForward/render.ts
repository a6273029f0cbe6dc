/**
 * A forward's nft table as text, and the shell steps that load it.
 *
 * The table (family ip: forwards are IPv4 in this release):
 *   prerouting  nat  dstnat   [ip daddr A | fib daddr type local] [ip saddr {S}] P dport H dnat → D
 *   output      nat  -100     the same for connections from the host itself (hairpin only;
 *                             127.0.0.0/8 excluded: DNAT from loopback needs route_localnet)
 *   forward     filter        ip daddr D P dport T ct status dnat accept   (comment: owner)
 *   postrouting nat  srcnat   ip saddr <D's subnet> ip daddr D P dport T ct status dnat masquerade
 *                             (hairpin only: guests of D's own network reach D through the
 *                             host address, and D must answer through the host)
 * `fib daddr type local` keeps a forward without hostAddress to the host's own
 * addresses, so traffic merely routed through the host (a guest talking to a
 * remote port 8080) is never hijacked.
 *
 * Loading is `nft -c -f -` then `nft -f -`: the check parses and validates the
 * whole text in the kernel without committing, and the load is one
 * transaction. An update replaces the table inside that one transaction
 * (`table X {}; delete table X; table X {…}`), so packets never see a
 * half-written forward.
 */
import { nftLoad } from "../../nft";
import { Step, Plan, Guard } from "../../render";
import { nftAddr, nftIdent, nftPortRange, nftString, sh } from "../../shell";
import { OWNER_PREFIX } from "./observe";
import { disarmSteps } from "../../persist/systemd";
import { ForwardDeletePlan, ForwardPlan, ForwardTable } from "./plan";
import { PortRange } from "./schema";

function nftPorts(r: PortRange): string {
  return nftPortRange(r.first, r.last);
}

/** The dnat statement: keep the port when the ranges are equal, else a port or a port map. */
function dnatTarget(t: ForwardTable): string {
  const d = nftAddr(t.destination);
  const { hostRange: h, destRange: r } = t;
  if (r.first === h.first && r.last === h.last) return `dnat ip to ${d}`;
  if (h.first === h.last) return `dnat ip to ${d}:${nftPorts(r)}`;
  const elems: string[] = [];
  for (let p = h.first; p <= h.last; p++) elems.push(`${p} : ${p - h.first + r.first}`);
  return `dnat ip to ${d} : ${t.protocol} dport map { ${elems.join(", ")} }`;
}

/** The `table ip kvmnet_pf_… { … }` text for `t`. */
export function renderTable(t: ForwardTable): string {
  const proto = t.protocol === "udp" ? "udp" : "tcp";
  const local = t.hostAddress ? `ip daddr ${nftAddr(t.hostAddress)}` : "fib daddr type local";
  const sources = t.sourceCidrs.length === 0 ? "" : ` ip saddr { ${t.sourceCidrs.map(nftAddr).join(", ")} }`;
  const match = `${proto} dport ${nftPorts(t.hostRange)}`;
  const target = dnatTarget(t);
  const comment = t.description !== undefined ? ` comment ${nftString(t.description)}` : "";
  const back = `ip daddr ${nftAddr(t.destination)} ${proto} dport ${nftPorts(t.destRange)} ct status dnat`;
  const lines = [
    `table ip ${nftIdent(t.table)} {`,
    `  comment ${nftString(`pulumi-kvmnet PortForward ${t.owner}`.slice(0, 128))}`,
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    `    ${local}${sources} ${match} ${target}${comment}`,
    "  }",
  ];
  if (t.hairpin) {
    const outLocal = t.hostAddress ? `ip daddr ${nftAddr(t.hostAddress)}` : "ip daddr != 127.0.0.0/8 fib daddr type local";
    lines.push("  chain output {", "    type nat hook output priority -100; policy accept;", `    ${outLocal} ${match} ${target}`, "  }");
  }
  lines.push("  chain forward {", "    type filter hook forward priority filter; policy accept;", `    ${back} accept comment ${nftString(OWNER_PREFIX + t.owner)}`, "  }");
  if (t.hairpin && t.masqueradeSubnet) {
    lines.push("  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;", `    ip saddr ${nftAddr(t.masqueradeSubnet)} ${back} masquerade`, "  }");
  }
  lines.push("}");
  return lines.join("\n") + "\n";
}

/** Replace-or-create in one transaction: declaring the table first makes the delete valid when it is absent. */
export function replaceText(t: ForwardTable): string {
  const ident = nftIdent(t.table);
  return `table ip ${ident} {}\ndelete table ip ${ident}\n${renderTable(t)}`;
}

/**
 * Re-check under the host lock that no other forward takes the same packets:
 * the observe round trip ran without the lock, so two forwards created at
 * once would otherwise both pass the planner's conflict check. Reads table
 * names (`kvmnet_pf_<proto>_<a_b_c_d|any>_<first>[_<last>]`) with awk.
 */
function overlapGuard(t: ForwardTable): Guard {
  const awkProgram =
    '$1 == "table" && $2 == "ip" && $3 ~ /^kvmnet_pf_(tcp|udp)_/ && $3 != self {' +
    ' n = split($3, x, "_"); if (x[4] == "any") { addr = "any"; i = 5 } else { addr = x[4] "." x[5] "." x[6] "." x[7]; i = 8 }' +
    " f = x[i] + 0; l = (n > i) ? x[i + 1] + 0 : f;" +
    ' if (x[3] == proto && f <= last && first <= l && (addr == "any" || want == "any" || addr == want)) { print $3; bad = 1 } }' +
    " END { exit bad }";
  return {
    test: sh`nft list tables ip | awk -v ${`self=${nftIdent(t.table)}`} -v ${`proto=${t.protocol}`} -v ${`want=${t.hostAddress ? nftAddr(t.hostAddress) : "any"}`} -v ${`first=${t.hostRange.first}`} -v ${`last=${t.hostRange.last}`} ${awkProgram}`,
    kind: "Conflict",
    message: `another port forward of ${t.protocol} port ${nftPorts(t.hostRange)} on ${t.hostAddress ?? "every address"} appeared on the host while this change was planned (its table is named above)`,
  };
}

export function renderForwardPlan(plan: ForwardPlan): Plan {
  const guards: Guard[] = [{ test: sh`command -v nft >/dev/null 2>&1`, kind: "Unsupported", message: "the host has no nft command (install nftables)" }];
  const ident = nftIdent(plan.table);
  guards.push(overlapGuard(plan.desired));
  if (!plan.exists) {
    guards.push({
      test: sh`! nft list table ip ${ident} >/dev/null 2>&1`,
      kind: "Conflict",
      message: `nft table ip ${plan.table} appeared on the host while this change was planned`,
    });
  }
  const step: Step = plan.exists
    ? {
        description: `rewrite nft table ip ${plan.table}`,
        run: nftLoad(replaceText(plan.desired)),
        undo: plan.previous ? nftLoad(replaceText(plan.previous)) : sh`nft delete table ip ${ident}`,
      }
    : {
        description: `create nft table ip ${plan.table}`,
        run: nftLoad(renderTable(plan.desired)),
        undo: sh`nft delete table ip ${ident}`,
      };
  return { guards, steps: [step, ...(plan.disarm ? disarmSteps(plan.disarm) : [])] };
}

export function renderForwardDelete(d: ForwardDeletePlan): Plan {
  const steps: Step[] = d.disarm ? disarmSteps(d.disarm) : [];
  if (d.exists) steps.push({ description: `delete nft table ip ${d.table}`, run: sh`nft delete table ip ${nftIdent(d.table)}` });
  return { guards: [], steps };
}

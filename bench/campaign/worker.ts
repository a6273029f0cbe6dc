/**
 * One provider process of the fault campaign (bench/campaign/run.ts): it runs a
 * list of provider calls against a sandbox host, the way the dynamic-provider
 * process does for the engine, so the campaign can SIGKILL it (or cut its SSH
 * session) in the middle of one of them and start a fresh one to retry.
 *
 *   tsx bench/campaign/worker.ts <job.json>
 *
 * Prints one JSON line per event on stdout: `{"event":"start","step":i}` right
 * before step i calls the provider (the campaign's kill clock starts there) and
 * `{"event":"done","step":i,...}` after it. A step without `id`/`props` works on
 * the object the previous create/update/read returned.
 */
import * as fs from "fs";
import { closeAllConnections } from "../../provider/host";
import { isKvmnetError } from "../../provider/errors";
import { PROVIDERS, type CampaignKind } from "./kinds";

/** One provider call. */
export type WorkerStep =
  | { op: "create"; inputs: Record<string, unknown> }
  | { op: "update"; id?: string; olds?: Record<string, unknown>; news: Record<string, unknown> }
  | { op: "read"; id?: string; props?: Record<string, unknown> }
  | { op: "delete"; id?: string; props?: Record<string, unknown> };

export interface WorkerJob {
  kind: CampaignKind;
  steps: WorkerStep[];
}

/** What a finished step reports. */
export interface WorkerDone {
  event: "done";
  step: number;
  ok: boolean;
  ms: number;
  id?: string;
  outs?: Record<string, unknown>;
  error?: { kind: string; message: string };
}

export type WorkerEvent = { event: "start"; step: number } | WorkerDone;

let pending: number | undefined;

// Node exits when nothing is left to wait for, even with a promise unsettled: a
// provider call that lost its connection and will never settle ends up here.
process.on("beforeExit", () => {
  if (pending !== undefined) process.stderr.write(`the event loop emptied while step ${pending} was pending: the provider call will never settle\n`);
});

function emit(e: WorkerEvent): void {
  pending = e.event === "start" ? e.step : undefined;
  process.stdout.write(JSON.stringify(e) + "\n");
}

async function main(): Promise<void> {
  const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8")) as WorkerJob;
  const p = PROVIDERS[job.kind];
  let id = "";
  let outs: Record<string, unknown> = {};
  for (const [i, step] of job.steps.entries()) {
    // A step that names its object (the state the engine holds) works on it from here on.
    if ("id" in step && step.id !== undefined) id = step.id;
    if ("props" in step && step.props !== undefined) outs = step.props;
    if ("olds" in step && step.olds !== undefined) outs = step.olds;
    emit({ event: "start", step: i });
    const t0 = Date.now();
    try {
      if (step.op === "create") {
        const r = await p.create(step.inputs);
        ({ id, outs } = r);
      } else if (step.op === "update") {
        const r = await p.update(id, outs, step.news);
        outs = r.outs;
      } else if (step.op === "read") {
        const r = await p.read(id, outs);
        if (r.id) ({ id, props: outs } = r);
        else id = "";
      } else {
        await p.delete(id, outs);
      }
      emit({ event: "done", step: i, ok: true, ms: Date.now() - t0, id, outs });
    } catch (e) {
      const error = isKvmnetError(e) ? { kind: e.kind, message: e.shortMessage } : { kind: "Error", message: String((e as Error)?.message ?? e) };
      emit({ event: "done", step: i, ok: false, ms: Date.now() - t0, error });
    }
  }
  closeAllConnections();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(String(e instanceof Error ? (e.stack ?? e) : e) + "\n");
    process.exit(1);
  },
);

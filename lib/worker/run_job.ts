/**
 * The manager's side of per-message isolation: start a copy of skiff as a
 * worker child (as the recipients' uid and gid when skiff is root: directly,
 * or through the privileged helper once the manager runs as `user`), hand it
 * one job and the message content on stdin, read its one-line report from
 * stdout. A child that crashes, hangs past its deadline (it is killed) or
 * prints garbage makes this reject with a WorkerError carrying the cause and
 * the start of the child's stderr; the manager logs it on the message's line
 * and defers the recipients, so the message is retried, never lost.
 */
import { type DeliveryJob, parseReport, type WorkerReport } from "./protocol.ts";
import { concatBytes } from "../sys/bytes.ts";
import { metrics } from "../metrics/metrics.ts";
import type { RunAs } from "../config/route_types.ts";
import { DirectSpawner, type Spawner } from "../sys/spawn.ts";
import { logWarn } from "../log/log.ts";

/** Reports larger than this are garbage by definition. */
const MAX_REPORT_BYTES = 64 * 1024;

/** How to run one job. */
export interface RunOptions {
  timeoutMs: number;
  /** Another program instead of skiff (tests). */
  command?: { command: string; args: string[] };
  /** The message content, written after the job line. */
  content?: () => Promise<ReadableStream<Uint8Array>>;
  /** Run as this user (root only; otherwise the child runs as skiff's own uid). */
  user?: RunAs | null;
  /** Who starts the child (default: directly from this process). */
  spawner?: Spawner;
}

/** A worker that did not deliver a report: `cause` is short, `stderr` what the child said. */
export class WorkerError extends Error {
  readonly stderr: string;
  constructor(cause: string, stderr: string) {
    super(stderr ? `${cause}: ${stderr.replace(/\s*\n\s*/g, " ").slice(0, 200)}` : cause);
    this.name = "WorkerError";
    this.stderr = stderr;
  }
}

const direct = new DirectSpawner();

/** Runs one job in a child; resolves with its validated report. */
export async function runWorkerJob(job: DeliveryJob, opts: RunOptions): Promise<WorkerReport> {
  const spawner = opts.spawner ?? direct;
  let child;
  try {
    child = await spawner.spawn({ kind: "worker", user: opts.user ?? null, command: opts.command });
  } catch (err) {
    throw new WorkerError(`Cannot start worker: ${(err as Error).message}`, "");
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill();
  }, opts.timeoutMs);
  try {
    const feed = (async () => {
      const writer = child.stdin.getWriter();
      try {
        await writer.write(new TextEncoder().encode(JSON.stringify(job) + "\n"));
        if (opts.content) {
          for await (const chunk of await opts.content()) await writer.write(chunk);
        }
        await writer.close();
      } catch {
        await writer.abort().catch(() => {}); // the child went away: its status says why
      }
    })();
    let out = "";
    let outError: Error | null = null;
    try {
      out = await readBounded(child.stdout, MAX_REPORT_BYTES);
    } catch (err) {
      outError = err as Error;
      child.kill();
    }
    const status = await child.status;
    await feed;
    if (timedOut) {
      metrics.workerFailure("timeout");
      throw new WorkerError(
        `Worker timed out after ${opts.timeoutMs} ms and was killed`,
        status.stderr,
      );
    }
    if (outError) {
      metrics.workerFailure("report");
      throw new WorkerError(outError.message, status.stderr);
    }
    if (status.code !== 0 || status.signal) {
      metrics.workerFailure("exit");
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      throw new WorkerError(`Worker failed with ${how}`, status.stderr);
    }
    const line = out.split("\n").find((l) => l.trim() !== "") ?? "";
    try {
      const report = parseReport(line, job.file);
      relayWarnings(job.file, status.stderr);
      return report;
    } catch (err) {
      metrics.workerFailure("report");
      throw new WorkerError((err as Error).message, status.stderr);
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Reads a stream to its end as text, failing when it grows past max bytes. */
async function readBounded(stream: ReadableStream<Uint8Array>, max: number): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw new Error(`Worker printed more than ${max} bytes`);
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(concatBytes(chunks, total));
}

/**
 * The warnings and errors a successful worker logged (a refused .forward,
 * docs/delivery.md) reach the manager's log: its stderr is captured for
 * failure causes, so without this they would be lost. Each goes through the
 * manager's logger as a quoted field, never as a raw line: the worker runs
 * as the recipient, whose words must not forge log lines.
 */
function relayWarnings(file: string, stderr: string): void {
  for (const line of stderr.split("\n")) {
    if (/^\S+ (warning|error|fatal) |"level":"(warning|error|fatal)"/i.test(line)) {
      logWarn("worker logged", { id: file, line });
    }
  }
}

/**
 * The manager's side of per-message isolation: start a copy of skiff as a
 * worker child (as the recipients' uid and gid when skiff is root), hand it
 * one job and the message content on stdin, read its one-line report from
 * stdout. A child that crashes, hangs past its deadline (it is killed) or
 * prints garbage makes this reject; the manager then defers the
 * recipients, so the message is retried, never lost.
 */
import { type DeliveryJob, parseReport, type WorkerReport } from "./protocol.ts";
import { selfCommand } from "./self_command.ts";
import { concatBytes } from "../sys/bytes.ts";
import { metrics } from "../metrics/metrics.ts";

/** Reports larger than this are garbage by definition. */
const MAX_REPORT_BYTES = 64 * 1024;

/** How to run one job. */
export interface RunOptions {
  timeoutMs: number;
  /** Another program instead of skiff (tests). */
  command?: { command: string; args: string[] };
  /** The message content, written after the job line. */
  content?: () => Promise<ReadableStream<Uint8Array>>;
  /** Run as this uid and gid (both: setting only uid leaves gid 0). */
  uid?: number;
  gid?: number;
}

/** Runs one job in a child; resolves with its validated report. */
export async function runWorkerJob(job: DeliveryJob, opts: RunOptions): Promise<WorkerReport> {
  const cmd = opts.command ?? selfCommand(["worker"]);
  const ids = opts.uid !== undefined && opts.gid !== undefined
    ? { uid: opts.uid, gid: opts.gid }
    : {};
  const child = new Deno.Command(cmd.command, {
    args: cmd.args,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
    ...ids,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
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
    const out = await readBounded(child.stdout, MAX_REPORT_BYTES);
    const status = await child.status;
    await feed;
    if (timedOut) {
      metrics.workerFailure("timeout");
      throw new Error(`Worker timed out after ${opts.timeoutMs} ms and was killed`);
    }
    if (!status.success) {
      metrics.workerFailure("exit");
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      throw new Error(`Worker failed with ${how}`);
    }
    const line = out.split("\n").find((l) => l.trim() !== "") ?? "";
    try {
      return parseReport(line, job.file);
    } catch (err) {
      metrics.workerFailure("report");
      throw err;
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

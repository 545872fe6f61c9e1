/**
 * The manager's side of per-message isolation: start a copy of skiff as a
 * worker child, hand it one job on stdin, read its one-line report from
 * stdout. A child that crashes, hangs past its deadline (it is killed) or
 * prints garbage makes this reject; the manager then defers the recipients,
 * so the message is retried, never lost.
 */
import { type DeliveryJob, parseReport, type WorkerReport } from "./protocol.ts";
import { selfCommand } from "./self_command.ts";

/** Reports larger than this are garbage by definition. */
const MAX_REPORT_BYTES = 64 * 1024;

/** Runs one job in a child; resolves with its validated report. */
export async function runWorkerJob(
  job: DeliveryJob,
  opts: { timeoutMs: number; command?: { command: string; args: string[] } },
): Promise<WorkerReport> {
  const cmd = opts.command ?? selfCommand(["worker"]);
  const child = new Deno.Command(cmd.command, {
    args: cmd.args,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, opts.timeoutMs);
  try {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(JSON.stringify(job) + "\n")).catch(() => {});
    await writer.close().catch(() => {});
    const out = await readBounded(child.stdout, MAX_REPORT_BYTES);
    const status = await child.status;
    if (timedOut) throw new Error(`Worker timed out after ${opts.timeoutMs} ms and was killed`);
    if (!status.success) {
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      throw new Error(`Worker failed with ${how}`);
    }
    const line = out.split("\n").find((l) => l.trim() !== "") ?? "";
    return parseReport(line, job.file);
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
  const all = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(all);
}

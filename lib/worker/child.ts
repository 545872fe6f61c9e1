/**
 * The child side of per-message isolation: `skiff worker` reads one job from
 * stdin, drops the permissions local delivery does not need, delivers the
 * named recipients into their Maildirs, appends each result to the message's
 * journal, and reports on stdout the message file name plus either the next
 * time to process it or that it should be deleted.
 */
import { deliverToMaildir } from "../deliver/maildir.ts";
import { DeliveryError } from "../deliver/errors.ts";
import { delaySeconds, logEvent, setupLogging } from "../log/log.ts";
import { retryDelayMs } from "../queue/retry.ts";
import type { JournalRecord } from "../spool/records.ts";
import { Spool } from "../spool/spool.ts";
import { parseJob, type WorkerReport } from "./protocol.ts";

/** Reads one line from stdin (bounded). */
async function readJobLine(): Promise<string> {
  const reader = Deno.stdin.readable.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (text.length > 1 << 20) throw new Error("Job line too long");
  }
  reader.releaseLock();
  return text.split("\n")[0];
}

/** Drops what a delivery child never needs: network, subprocesses, FFI, system info. */
async function dropPermissions(): Promise<void> {
  for (const name of ["net", "run", "ffi", "sys"] as const) {
    await Deno.permissions.revoke({ name });
  }
}

/** The local part of an address: the Maildir user. */
function localPart(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? address : address.slice(0, at);
}

/** Runs one job; returns the process exit code. */
export async function workerMain(): Promise<number> {
  const job = parseJob(await readJobLine());
  await setupLogging(job.log);
  await dropPermissions();
  const spool = new Spool(job.spoolDir);
  const state = await spool.load(job.file);
  for (const index of job.recipients) {
    const rcpt = state.recipients[index];
    if (!rcpt || rcpt.status === "delivered" || rcpt.status === "failed") continue;
    const now = Date.now();
    let record: JournalRecord;
    try {
      const { stream } = await spool.content(job.file);
      const path = await deliverToMaildir({
        root: job.maildirRoot,
        user: localPart(rcpt.address),
        returnPath: state.envelope.from,
        deliveredTo: rcpt.address,
        hostname: job.hostname,
        content: stream,
      });
      const name = path.slice(path.lastIndexOf("/") + 1);
      record = {
        t: "delivered",
        rcpt: index,
        at: now,
        dsn: "2.0.0",
        text: `Delivered to maildir as ${name}`,
        relay: "local",
      };
    } catch (err) {
      const permanent = err instanceof DeliveryError && err.permanent;
      const dsn = err instanceof DeliveryError ? err.dsn : "4.3.0";
      const text = err instanceof Error ? err.message : String(err);
      record = permanent ? { t: "failed", rcpt: index, at: now, dsn, text, relay: "local" } : {
        t: "deferred",
        rcpt: index,
        at: now,
        until: now + retryDelayMs(rcpt.attempts + 1, job),
        dsn,
        text,
        relay: "local",
      };
    }
    // The journal is the truth: the result is durable before it is reported.
    await spool.append(job.file, [record]);
    logEvent(record.t, {
      id: job.file,
      to: `<${rcpt.address}>`,
      relay: "local",
      delay: delaySeconds(state.envelope.received, now),
      dsn: record.dsn,
      status: record.t === "delivered" ? "sent" : record.t === "deferred" ? "deferred" : "bounced",
      text: record.text,
    });
  }
  const after = await spool.load(job.file);
  const report: WorkerReport = after.done
    ? { file: job.file, delete: true }
    : { file: job.file, next: after.nextAttempt };
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(report) + "\n"));
  return 0;
}

/**
 * The child side of per-message isolation: `skiff worker` reads a job and
 * the message content from stdin (then the next, as a pooled process,
 * pool.ts), drops the permissions local delivery does
 * not need (it keeps `run` only for pipe targets), delivers each target
 * (Maildir, mbox, pipe) and reports every recipient's result on stdout.
 * A target may ask for the user's ~/.forward first (forward.ts): it is
 * opened here, as the user, and only its parsed targets go back. The
 * manager starts it as the recipients' uid and gid when skiff is root, so
 * the child never reads the spool: the content comes on stdin, the results
 * go back to the manager, which appends them to the journal.
 */
import { dropPermissions } from "../sys/permissions.ts";
import { deliverToMaildir } from "../deliver/maildir.ts";
import { deliverToMbox } from "../deliver/mbox.ts";
import { deliverToPipe } from "../deliver/pipe.ts";
import { DeliveryError } from "../mail/delivery_error.ts";
import { splitAddress } from "../mail/address.ts";
import { delaySeconds, logEvent, logWarn, setupLogging } from "../log/log.ts";
import { userByUid } from "../sys/passwd.ts";
import { checkForward } from "./forward.ts";
import { StreamLines } from "./stream_lines.ts";
import {
  type DeliveryJob,
  IDLE_EXIT_MS,
  type JobResult,
  type JobTarget,
  MAX_JOBS,
  MAX_LOGGED,
  parseJob,
  type WorkerReport,
} from "./protocol.ts";

/** Largest message content a child accepts on stdin (bounded memory). */
const MAX_CONTENT = 256 * 1024 * 1024;

/** Longest job line. */
const MAX_JOB_LINE = 1 << 20;

/** Levels whose lines go back to the manager with the report (it relays them to its log). */
const RELAYED = new Set(["warning", "error", "fatal"]);

/** Who this worker runs as, learnt before the `sys` permission is dropped. */
interface Self {
  uid: number;
  home: string;
  shell: string;
}

function whoAmI(): Self {
  const uid = Deno.uid() ?? -1;
  const pw = userByUid(uid);
  return { uid, home: pw?.home ?? "/", shell: pw?.shell ?? "/bin/sh" };
}

async function deliverOne(
  t: JobTarget,
  job: { sender: string; hostname: string; self: Self },
  content: Uint8Array,
): Promise<string> {
  const d = t.destination;
  const domain = splitAddress(t.address).domain;
  switch (d.kind) {
    case "maildir": {
      // A home Maildir (exact) is the path itself: its parent is the root, its name the box.
      const cut = d.path.lastIndexOf("/");
      const path = await deliverToMaildir({
        root: d.exact ? d.path.slice(0, cut) : d.path,
        user: d.exact ? d.path.slice(cut + 1) : t.user,
        keepCase: d.exact,
        returnPath: job.sender,
        deliveredTo: t.address,
        hostname: job.hostname,
        content: ReadableStream.from([content]),
      });
      return `Delivered to maildir as ${path.slice(path.lastIndexOf("/") + 1)}`;
    }
    case "mbox":
      await deliverToMbox({
        path: d.path,
        returnPath: job.sender,
        deliveredTo: t.address,
        content,
        uid: job.self.uid,
        sharedDir: !d.file,
      });
      return `Delivered to mbox ${d.path}`;
    case "pipe":
      return await deliverToPipe({
        command: d.command,
        vars: { recipient: t.address, sender: job.sender, user: t.user, domain },
        content,
        timeoutMs: 50_000,
        account: job.self,
      });
    default:
      throw new DeliveryError(`Destination ${d.kind} is not local`, { dsn: "4.3.5" });
  }
}

/**
 * The .forward step of a target: its targets ("expand"), or "noforward"
 * when there is none and the manager routes the mailbox, or null to
 * deliver to the target's mailbox here. A refused file is logged with
 * its reason only.
 */
async function forwardFirst(t: JobTarget, id: string): Promise<JobResult | null> {
  const f = t.forward!;
  const found = await checkForward(f.path, f.owner);
  if (found.kind === "targets") {
    const text = `Forwarded by ${f.path} to ${found.targets.length} target(s)`;
    return { rcpt: t.rcpt, outcome: "expand", dsn: "2.0.0", text, targets: found.targets };
  }
  if (found.refused) {
    logWarn(".forward refused; delivering to the mailbox", {
      id,
      to: `<${t.address}>`,
      reason: found.refused,
    });
  }
  if (f.deliver) return null;
  return { rcpt: t.rcpt, outcome: "noforward", dsn: "2.0.0", text: found.refused ?? "No .forward" };
}

/** Delivers every target of one job; one result each, in order. */
async function runJob(job: DeliveryJob, content: Uint8Array, self: Self): Promise<JobResult[]> {
  const results: JobResult[] = [];
  for (const t of job.targets) {
    const started = Date.now();
    let result: JobResult;
    try {
      const fwd = t.forward ? await forwardFirst(t, job.file) : null;
      if (fwd) result = fwd;
      else {
        const text = await deliverOne(t, { ...job, self }, content);
        result = { rcpt: t.rcpt, outcome: "delivered", dsn: "2.0.0", text };
      }
    } catch (err) {
      const permanent = err instanceof DeliveryError && err.permanent;
      const dsn = err instanceof DeliveryError ? err.dsn : "4.3.0";
      const text = err instanceof Error ? err.message : String(err);
      result = { rcpt: t.rcpt, outcome: permanent ? "failed" : "deferred", dsn, text };
    }
    results.push(result);
    logEvent("local delivery", {
      id: job.file,
      to: `<${t.address}>`,
      outcome: result.outcome,
      took: delaySeconds(started, Date.now()),
    });
  }
  return results;
}

async function writeAll(bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await Deno.stdout.write(bytes.subarray(at));
}

/**
 * Serves jobs until stdin ends, MAX_JOBS were served or none came for
 * IDLE_EXIT_MS; returns the process exit code. What it learns at the first
 * job holds for the process: its log settings, who it runs as, and whether
 * it keeps `run` (pipe targets). The manager's pool keys processes by
 * exactly that, and a job that does not match is refused (the process
 * exits: a manager bug must not widen what a worker may do). Nothing else
 * outlives a job: each has its own content buffer, results and log lines.
 */
export async function workerMain(): Promise<number> {
  // Frames on stdin: a job line, then exactly `size` content bytes, per job.
  const input = new StreamLines(Deno.stdin.readable, () => "Job line too long");
  let kept: { self: Self; pipes: boolean } | null = null;
  let logged: string[] = [];
  for (let served = 0; served < MAX_JOBS; served++) {
    const line = await input.line(MAX_JOB_LINE, IDLE_EXIT_MS);
    if (line === null) {
      if (input.buffered > 0) throw new Error("Input ended inside a job line");
      return 0;
    }
    const job = parseJob(line);
    if (job.size > MAX_CONTENT) throw new Error("Message content too large");
    const content = await input.exact(job.size);
    // Only pipe delivery runs a program; nothing here talks to the network.
    const pipes = job.targets.some((t) => t.destination.kind === "pipe");
    if (!kept) {
      await setupLogging(job.log, {
        process: "worker",
        capture: (level, text) => {
          if (RELAYED.has(level) && logged.length < MAX_LOGGED) logged.push(text().trimEnd());
        },
      });
      kept = { self: whoAmI(), pipes };
      await dropPermissions(["net", "ffi", "sys", ...(pipes ? [] : ["run" as const])]);
    } else if (pipes !== kept.pipes) {
      throw new Error(
        pipes
          ? "Job has pipe targets, but this worker dropped the run permission"
          : "Job has no pipe targets, but this worker kept the run permission",
      );
    }
    logged = [];
    const results = await runJob(job, content, kept.self);
    const report: WorkerReport = {
      file: job.file,
      ...(job.seq !== undefined ? { seq: job.seq } : {}),
      results,
      logged,
    };
    await writeAll(new TextEncoder().encode(JSON.stringify(report) + "\n"));
  }
  return 0;
}

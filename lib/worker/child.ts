/**
 * The child side of per-message isolation: `skiff worker` reads one job and
 * the message content from stdin, drops the permissions local delivery does
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
import { type JobResult, type JobTarget, parseJob, type WorkerReport } from "./protocol.ts";
import { concatBytes } from "../sys/bytes.ts";

/** Largest message content a child accepts on stdin (bounded memory). */
const MAX_CONTENT = 256 * 1024 * 1024;

/** Reads the job line and then exactly `size` content bytes from stdin. */
async function readInput(): Promise<{ line: string; content: Uint8Array; size: () => number }> {
  const reader = Deno.stdin.readable.getReader();
  let buf = new Uint8Array(0);
  const append = (c: Uint8Array) => {
    const n = new Uint8Array(buf.length + c.length);
    n.set(buf);
    n.set(c, buf.length);
    buf = n;
  };
  let nl = -1;
  while ((nl = buf.indexOf(0x0a)) < 0) {
    const { value, done } = await reader.read();
    if (done) break;
    append(value);
    if (buf.length > 1 << 20 && buf.indexOf(0x0a) < 0) throw new Error("Job line too long");
  }
  if (nl < 0) throw new Error("No job line");
  const line = new TextDecoder().decode(buf.subarray(0, nl));
  const chunks: Uint8Array[] = [buf.subarray(nl + 1)];
  let total = chunks[0].length;
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > MAX_CONTENT) throw new Error("Message content too large");
    chunks.push(value);
  }
  reader.releaseLock();
  return { line, content: concatBytes(chunks, total), size: () => total };
}

/** Drops what a delivery child never needs: network, FFI, system info, and subprocesses unless piping. */

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

/** Runs one job; returns the process exit code. */
export async function workerMain(): Promise<number> {
  const input = await readInput();
  const job = parseJob(input.line);
  await setupLogging(job.log, { process: "worker" });
  if (input.size() !== job.size) {
    throw new Error(`Expected ${job.size} content bytes, got ${input.size()}`);
  }
  const self = whoAmI();
  // Only pipe delivery runs a program; nothing here talks to the network.
  const pipes = job.targets.some((t) => t.destination.kind === "pipe");
  await dropPermissions(["net", "ffi", "sys", ...(pipes ? [] : ["run" as const])]);
  const results: JobResult[] = [];
  for (const t of job.targets) {
    const started = Date.now();
    let result: JobResult;
    try {
      const fwd = t.forward ? await forwardFirst(t, job.file) : null;
      if (fwd) result = fwd;
      else {
        const text = await deliverOne(t, { ...job, self }, input.content);
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
  const report: WorkerReport = { file: job.file, results };
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(report) + "\n"));
  return 0;
}

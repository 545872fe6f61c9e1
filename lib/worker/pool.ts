/**
 * Long-lived local-delivery workers, as Postfix reuses its local(8)
 * processes: starting a `skiff worker` (a Deno process) costs far more than
 * a Maildir delivery, so the manager keeps workers running and hands each
 * one job after another (protocol.ts: a job line, the content, one report
 * line back).
 *
 * Processes are keyed by what they are: the uid and gid they run as,
 * whether they kept the `run` permission (pipe targets) and the log
 * settings they started with. A process only ever serves jobs of its key,
 * so it never serves another user's mail, and it runs one job at a time.
 * At most `perKey` processes per key and `total` in all run; idle ones of
 * other keys are closed to make room, and a job waits when every allowed
 * process is busy. A process is closed (stdin EOF) after MAX_JOBS jobs,
 * after `idleMs` without one, at retire() (reload) and at close().
 *
 * Failures are per job and as strong as with one process per message: a
 * worker that crashes, misses the job's deadline (it is killed), prints
 * garbage, answers for another job or floods is killed and dropped from
 * the pool, the job rejects with a WorkerError naming the cause (the
 * recipients are deferred), and the next job gets a fresh process.
 */
import type { RunAs } from "../config/route_types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { metrics } from "../metrics/metrics.ts";
import { concatBytes } from "../sys/bytes.ts";
import { type ChildExit, DirectSpawner, type SpawnedChild, type Spawner } from "../sys/spawn.ts";
import { type DeliveryJob, MAX_JOBS, parseReport, type WorkerReport } from "./protocol.ts";
import { StreamLines } from "./stream_lines.ts";

/** A report line longer than this is garbage by definition. */
const MAX_REPORT_BYTES = 64 * 1024;

/** How long a closed worker may take to exit before it is killed. */
const EXIT_GRACE_MS = 5000;

/**
 * How long a job waits for a busy process of its key before another is
 * started for it (and none is started while one of the key is still
 * loading). A start costs ~0.3-0.5 s of CPU (Deno loading skiff) and a
 * Maildir job a few ms, so queueing behind a running process is usually
 * cheaper; a job that has waited this long (a burst, a slow pipe) gets a
 * process of its own, up to perKey. Measured with 200 messages to one user
 * (docs/benchmarks.md): 30 ms gave 82-93 msg/s, 200 ms 75-76.
 */
const SPAWN_DELAY_MS = 30;

/** A process still on its first job this long after its start is slow, not loading. */
const LOAD_MS = 3000;

/** A worker that did not deliver a report: `cause` is short, `stderr` what the child said. */
export class WorkerError extends Error {
  readonly stderr: string;
  constructor(cause: string, stderr: string) {
    super(stderr ? `${cause}: ${stderr.replace(/\s*\n\s*/g, " ").slice(0, 200)}` : cause);
    this.name = "WorkerError";
    this.stderr = stderr;
  }
}

/** The pool's settings; the functions are read per job, so a reload applies at once. */
export interface PoolOptions {
  /** Who starts workers (default: directly, lib/sys/spawn.ts). */
  spawner?: Spawner;
  /** A job's deadline, from writing it to reading its report. */
  timeoutMs: () => number;
  /** Most processes per key (uid, gid, run permission, log settings). */
  perKey: () => number;
  /** Most processes in all. */
  total: () => number;
  /** An idle process is closed after this long (default 15 s). */
  idleMs?: number;
  /** Jobs per process (default MAX_JOBS; 1 = a process per job). */
  maxUse?: number;
  /** Another program instead of skiff (tests; direct spawning only). */
  command?: { command: string; args: string[] };
}

/** One job's content and who runs it. */
export interface PoolJob {
  /** The message content, written after the job line (exactly job.size bytes). */
  content?: () => Promise<ReadableStream<Uint8Array>>;
  /** Run as this user (root or the helper only); null: the manager's own uid. */
  user?: RunAs | null;
}

/** One worker process. */
interface Proc {
  key: string;
  child: SpawnedChild;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  stdout: StreamLines;
  served: number;
  startedAt: number;
  /** Resolves once the process has exited. */
  exit: Promise<ChildExit>;
  exited: boolean;
  /** Close it when its current job ends (reload, pool closing). */
  retiring: boolean;
  idleTimer?: ReturnType<typeof setTimeout>;
}

/** The content source broke (not the worker): the job is deferred with this cause. */
class ContentError extends Error {}

/** The local-delivery worker processes of one manager. */
export class WorkerPool {
  #opts: PoolOptions;
  #spawner: Spawner;
  /** Running processes that take jobs (busy or idle). */
  #procs = new Set<Proc>();
  /** Idle processes, least recently used first. */
  #idle: Proc[] = [];
  /** Processes being started, per key (they count against the limits). */
  #starting = new Map<string, number>();
  /** Closed processes not yet exited. */
  #exiting = new Set<Promise<unknown>>();
  #waiters: (() => void)[] = [];
  /** When a process of the key last finished starting. */
  #readyAt = new Map<string, number>();
  #closed = false;
  #seq = 0;
  #started = 0;

  constructor(opts: PoolOptions) {
    this.#opts = opts;
    this.#spawner = opts.spawner ?? new DirectSpawner();
  }

  /** Processes started since the pool was made, and those running now. */
  get stats(): { started: number; alive: number } {
    return { started: this.#started, alive: this.#procs.size };
  }

  /** Runs one job in a worker of its key; resolves with the validated report. */
  async run(job: DeliveryJob, opts: PoolJob): Promise<WorkerReport> {
    const user = opts.user ?? null;
    const pipes = job.targets.some((t) => t.destination.kind === "pipe");
    const key = JSON.stringify([user?.uid ?? null, user?.gid ?? null, pipes, job.log]);
    // The content is opened while the job waits for a process.
    const source = opts.content?.();
    source?.catch(() => {}); // observed in #feed
    let proc: Proc;
    try {
      proc = await this.#acquire(key, user);
    } catch (err) {
      source?.then((s) => s.cancel()).catch(() => {});
      throw err;
    }
    return await this.#serve(proc, { ...job, seq: ++this.#seq }, source);
  }

  /** Closes every process once it is idle (a reload: new settings reach new processes). */
  retire(): void {
    for (const p of [...this.#idle]) this.#retire(p);
    for (const p of this.#procs) p.retiring = true;
  }

  /**
   * Closes the pool: no new jobs, idle processes get stdin EOF, busy ones
   * theirs when their job ends (within its deadline); a process still
   * running EXIT_GRACE_MS after its EOF is killed. Resolves once all exited.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wake();
    this.retire();
    while (this.#procs.size > 0 || this.#exiting.size > 0) {
      await Promise.allSettled([...this.#exiting, ...[...this.#procs].map((p) => p.exit)]);
    }
  }

  #count(key: string): number {
    let n = this.#starting.get(key) ?? 0;
    for (const p of this.#procs) if (p.key === key) n++;
    return n;
  }

  /**
   * Whether a process of the key is being started or still on its first job
   * (loading skiff), for at most LOAD_MS: a first job that takes longer (a
   * slow pipe) must not hold back a second process.
   */
  #loading(key: string): boolean {
    if ((this.#starting.get(key) ?? 0) > 0) return true;
    const now = Date.now();
    for (const p of this.#procs) {
      if (p.key === key && p.served === 0 && now - p.startedAt < LOAD_MS) return true;
    }
    return false;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** An idle process of the key, else a new one within the limits, else waits. */
  async #acquire(key: string, user: RunAs | null): Promise<Proc> {
    const since = Date.now();
    while (true) {
      if (this.#closed) throw new WorkerError("Worker pool is closed (skiff is stopping)", "");
      const at = this.#idle.findLastIndex((p) => p.key === key);
      if (at >= 0) {
        const [proc] = this.#idle.splice(at, 1);
        clearTimeout(proc.idleTimer);
        return proc;
      }
      const count = this.#count(key);
      // One start at a time per key, and another only after this job has waited
      // SPAWN_DELAY_MS while the key's processes were running (not starting).
      const waited = Date.now() - Math.max(since, this.#readyAt.get(key) ?? 0);
      if (this.#loading(key)) {
        await this.#waitFor(SPAWN_DELAY_MS);
        continue;
      }
      if (count > 0 && waited < SPAWN_DELAY_MS) {
        await this.#waitFor(SPAWN_DELAY_MS - waited);
        continue;
      }
      if (count < Math.max(1, this.#opts.perKey())) {
        const total = Math.max(1, this.#opts.total());
        const all = () =>
          this.#procs.size + [...this.#starting.values()].reduce((a, b) => a + b, 0);
        // Make room by closing the least recently used idle process of another key.
        if (all() >= total && this.#idle.length > 0) this.#retire(this.#idle[0]);
        if (all() < total) return await this.#start(key, user);
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Until a process is released, started or dropped, or `ms` passed. */
  async #waitFor(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#waiters.push(resolve);
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
  }

  async #start(key: string, user: RunAs | null): Promise<Proc> {
    this.#starting.set(key, (this.#starting.get(key) ?? 0) + 1);
    let child: SpawnedChild;
    try {
      child = await this.#spawner.spawn({ kind: "worker", user, command: this.#opts.command });
    } catch (err) {
      throw new WorkerError(`Cannot start worker: ${(err as Error).message}`, "");
    } finally {
      this.#starting.set(key, this.#starting.get(key)! - 1);
      this.#wake();
    }
    const proc: Proc = {
      key,
      child,
      stdin: child.stdin.getWriter(),
      stdout: new StreamLines(child.stdout, (max) => `Worker printed more than ${max} bytes`),
      served: 0,
      startedAt: Date.now(),
      exit: child.status,
      exited: false,
      retiring: false,
    };
    this.#procs.add(proc);
    this.#started++;
    metrics.workerStarted();
    logEvent("worker started", { pid: child.pid, uid: user?.uid ?? "self" });
    child.status.then(() => {
      proc.exited = true;
      proc.stdout.cancel();
      clearTimeout(proc.idleTimer);
      const at = this.#idle.indexOf(proc);
      if (at >= 0) this.#idle.splice(at, 1);
      // A busy one is dropped by #serve, which reports why.
      if (at >= 0 || proc.retiring) this.#drop(proc);
    });
    return proc;
  }

  /** Forgets a process (it has exited or is being closed or killed). */
  #drop(proc: Proc): void {
    if (!this.#procs.delete(proc)) return;
    metrics.workerDropped();
    this.#wake();
  }

  /** Closes a process: stdin EOF, killed if it has not exited within the grace. */
  #retire(proc: Proc): void {
    const at = this.#idle.indexOf(proc);
    if (at >= 0) this.#idle.splice(at, 1);
    clearTimeout(proc.idleTimer);
    proc.retiring = true;
    this.#drop(proc);
    proc.stdin.close().catch(() => {});
    const kill = setTimeout(() => proc.child.kill(), EXIT_GRACE_MS);
    const done = proc.exit.then(() => clearTimeout(kill));
    this.#exiting.add(done);
    done.then(() => this.#exiting.delete(done));
  }

  /** Back to the idle list, or closed when used up or retiring. */
  #release(proc: Proc): void {
    if (proc.served++ === 0) this.#readyAt.set(proc.key, Date.now());
    if (proc.exited) return this.#drop(proc);
    if (proc.served >= (this.#opts.maxUse ?? MAX_JOBS) || proc.retiring || this.#closed) {
      return this.#retire(proc);
    }
    this.#idle.push(proc);
    proc.idleTimer = setTimeout(() => this.#retire(proc), this.#opts.idleMs ?? 15_000);
    this.#wake();
  }

  /** Kills and forgets a failed process; the job's error, with the cause and its stderr. */
  async #fail(proc: Proc, cause: string, reason: "timeout" | "exit" | "report" | null) {
    proc.child.kill();
    this.#drop(proc);
    const status = await proc.exit;
    if (reason) metrics.workerFailure(reason);
    return new WorkerError(cause, status.stderr);
  }

  /** Writes the job and its content, reads the report; any trouble discards the process. */
  async #serve(
    proc: Proc,
    job: DeliveryJob,
    content: Promise<ReadableStream<Uint8Array>> | undefined,
  ): Promise<WorkerReport> {
    const timeoutMs = this.#opts.timeoutMs();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.child.kill();
    }, timeoutMs);
    try {
      const feed = this.#feed(proc, job, content);
      let line: string | null = null;
      let readError: Error | null = null;
      try {
        line = await proc.stdout.line(MAX_REPORT_BYTES);
      } catch (err) {
        readError = err as Error;
        proc.child.kill(); // it may be blocked on a full pipe, or on more content
      }
      const fed = line === null || readError ? await feed : null;
      if (timedOut) {
        throw await this.#fail(
          proc,
          `Worker timed out after ${timeoutMs} ms and was killed`,
          "timeout",
        );
      }
      if (fed) throw await this.#fail(proc, fed.message, null);
      if (readError) throw await this.#fail(proc, readError.message, "report");
      if (line === null) {
        const status = await proc.exit;
        const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
        const cause = status.code === 0 && !status.signal
          ? "Worker exited without a report"
          : `Worker failed with ${how}`;
        throw await this.#fail(proc, cause, "exit");
      }
      let report: WorkerReport;
      try {
        report = parseReport(line, job.file, job.seq);
      } catch (err) {
        throw await this.#fail(proc, (err as Error).message, "report");
      }
      // An honest worker read all the content before it answered.
      const late = await feed;
      if (timedOut || late) {
        throw await this.#fail(proc, late?.message ?? "Worker answered before reading", "report");
      }
      relayWarnings(job.file, report.logged ?? []);
      // A second line is not part of any protocol: keep the report, but not the process.
      if (proc.stdout.buffered > 0) {
        this.#retire(proc);
        proc.child.kill();
      } else this.#release(proc);
      return report;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Writes the job line and exactly job.size content bytes. Resolves with a
   * ContentError when the content source broke or does not match the size
   * (the worker is killed: it would wait for bytes that never come), or null;
   * a write the child refused (it went away) is left to its exit status.
   */
  async #feed(
    proc: Proc,
    job: DeliveryJob,
    content: Promise<ReadableStream<Uint8Array>> | undefined,
  ): Promise<ContentError | null> {
    const write = (b: Uint8Array) => proc.stdin.write(b).then(() => true, () => false);
    // The job line goes out with the first chunk of a small message: one write, one wake-up.
    let line: Uint8Array | null = new TextEncoder().encode(JSON.stringify(job) + "\n");
    let sent = 0;
    try {
      if (content) {
        for await (const chunk of await content) {
          sent += chunk.length;
          if (sent > job.size) break;
          const out: Uint8Array = line && chunk.length <= 64 * 1024
            ? concatBytes([line, chunk], line.length + chunk.length)
            : chunk;
          if (line && out === chunk && !await write(line)) return null;
          line = null;
          if (!await write(out)) return null;
        }
      }
    } catch (err) {
      proc.child.kill();
      return new ContentError(`Cannot read the message content: ${(err as Error).message}`);
    }
    if (line && !await write(line)) return null;
    if (sent !== job.size) {
      proc.child.kill();
      return new ContentError(
        `Message content has ${sent > job.size ? "more than " : ""}${sent} bytes, ` +
          `its envelope says ${job.size}`,
      );
    }
    return null;
  }
}

/**
 * The warnings and errors a worker logged during a job (a refused .forward,
 * docs/delivery.md) reach the manager's log. Each goes through the
 * manager's logger as a quoted field, never as a raw line: the worker runs
 * as the recipient, whose words must not forge log lines.
 */
function relayWarnings(file: string, lines: string[]): void {
  for (const line of lines) logWarn("worker logged", { id: file, line });
}

/**
 * Pieces of the skiff-versus-Postfix benchmark (scripts/bench.ts): a running
 * skiff, a private Postfix instance, Postfix's smtp-sink and smtp-source,
 * idle SMTP connections, and memory readings from /proc. Everything listens
 * on 127.0.0.1 only, every wait is bounded, and every process started here
 * is stopped by its pid.
 */
import { waitListening } from "../tests/run_cmd.ts";
import { V8_FLAGS } from "../lib/sys/self_command.ts";

export const ROOT = new URL("..", import.meta.url).pathname;
export const SMTP_SOURCE = "/usr/sbin/smtp-source";
export const SMTP_SINK = "/usr/sbin/smtp-sink";
export const POSTFIX = "/usr/sbin/postfix";

const decoder = new TextDecoder();

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Runs a program to completion within a time limit (killed after it). */
export async function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string; ms: number; timedOut: boolean }> {
  const start = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, opts.timeoutMs ?? 60_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      ms: performance.now() - start,
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Memory from /proc

/** Memory of a set of processes, in KiB. */
export interface Memory {
  rss: number;
  pss: number;
  processes: number;
}

function readProc(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null; // the process is gone
  }
}

function statusField(pid: number, field: string): number {
  const text = readProc(`/proc/${pid}/status`) ?? "";
  const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  return m ? Number(m[1]) : 0;
}

/** Peak resident set (VmHWM) of one process, in KiB; 0 once it is gone. */
export function peakRss(pid: number): number {
  return statusField(pid, "VmHWM");
}

/** The pids and every descendant of them. */
export function processTree(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const stat = readProc(`/proc/${e.name}/stat`);
    if (!stat) continue;
    // The command name may contain spaces and parentheses: fields follow the last ")".
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(e.name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const todo = roots.filter((p) => readProc(`/proc/${p}/stat`) !== null);
  while (todo.length > 0) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Summed RSS (VmRSS) and, when asked, PSS (smaps_rollup) of the processes. */
export function memoryOf(pids: number[], withPss = true): Memory {
  let rss = 0;
  let pss = 0;
  let processes = 0;
  for (const pid of pids) {
    const r = statusField(pid, "VmRSS");
    if (r === 0) continue;
    processes++;
    rss += r;
    if (withPss) {
      const m = (readProc(`/proc/${pid}/smaps_rollup`) ?? "").match(/^Pss:\s+(\d+) kB/m);
      pss += m ? Number(m[1]) : 0;
    }
  }
  return { rss, pss, processes };
}

/** Samples a process tree's summed memory and keeps the peaks. */
export class MemorySampler {
  #roots: () => number[];
  #timer: ReturnType<typeof setInterval>;
  peak: Memory = { rss: 0, pss: 0, processes: 0 };
  samples = 0;

  constructor(roots: () => number[], intervalMs = 200) {
    this.#roots = roots;
    this.#timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Takes one sample now. */
  sample(): void {
    const m = memoryOf(processTree(this.#roots()));
    this.samples++;
    this.peak = {
      rss: Math.max(this.peak.rss, m.rss),
      pss: Math.max(this.peak.pss, m.pss),
      processes: Math.max(this.peak.processes, m.processes),
    };
  }

  stop(): Memory {
    clearInterval(this.#timer);
    this.sample();
    return this.peak;
  }
}

// ---------------------------------------------------------------------------
// The two MTAs

/** What a benchmark needs from an MTA under test. */
export interface Mta {
  readonly name: string;
  readonly port: number;
  /** Pids whose process trees make up the MTA. */
  roots(): number[];
  /** Event counts from the MTA's log: received, sent, deferred, rejected, errors. */
  events(): Promise<Record<string, number>>;
  /** Files in the MTA's queue. */
  queued(): number;
  stop(): Promise<void>;
}

/** Options shared by both MTAs. */
export interface MtaOptions {
  /** Directory of its own (spool, queue, logs, config). */
  dir: string;
  port: number;
  /** "127.0.0.1:PORT" of the smarthost for all non-local mail. */
  relayhost: string;
}

function countFiles(dir: string): number {
  let n = 0;
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile) n++;
      else if (e.isDirectory) n += countFiles(`${dir}/${e.name}`);
    }
  } catch { /* missing */ }
  return n;
}

/** `skiff serve` run the way operators run it, on a generated config. */
export class Skiff implements Mta {
  readonly name = "skiff";
  readonly port: number;
  readonly dir: string;
  #child: Deno.ChildProcess;
  #log = "";
  #pumped: Promise<void>;

  private constructor(opts: MtaOptions, child: Deno.ChildProcess) {
    this.port = opts.port;
    this.dir = opts.dir;
    this.#child = child;
    this.#pumped = this.#pump(child.stderr);
  }

  /** Starts skiff and waits for its "ready" log line. */
  static async start(
    opts: MtaOptions & { connections: number; root?: string; spoolSync?: string },
  ): Promise<Skiff> {
    const root = (opts.root ?? ROOT).replace(/\/*$/, "/");
    await Deno.mkdir(opts.dir, { recursive: true });
    const config = `${opts.dir}/skiff.toml`;
    await Deno.writeTextFile(
      config,
      `hostname = "skiff-bench.localdomain"
spool_dir = "${opts.dir}/spool"
[[listener]]
address = "127.0.0.1:${opts.port}"
protocol = "smtp"
[limits]
connections = ${opts.connections}
connections_per_ip = ${opts.connections}
[local]
domains = ["localhost"]
maildir_root = "${opts.dir}/mail"
[relay]
relayhost = "${opts.relayhost}"
connect_timeout = 5
reply_timeout = 30
${opts.spoolSync ? `[queue]\nspool_sync = "${opts.spoolSync}"\n` : ""}`,
    );
    // The deno binary itself (not the scripts/deno wrapper), so the pid is skiff's.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--config",
        `${root}deno.json`,
        "--allow-all",
        ...V8_FLAGS,
        `${root}main.ts`,
        "--config",
        config,
        "serve",
      ],
      cwd: opts.dir,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const skiff = new Skiff(opts, child);
    try {
      await skiff.#waitLog(/ ready /, 30_000);
    } catch (err) {
      await skiff.stop();
      throw err;
    }
    return skiff;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) this.#log += dec.decode(chunk, { stream: true });
    } catch { /* closed */ }
  }

  async #waitLog(re: RegExp, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    let exited: number | null = null;
    this.#child.status.then((st) => exited = st.code);
    while (!re.test(this.#log)) {
      if (exited !== null || Date.now() > deadline) {
        const how = exited !== null ? `exited with ${exited}` : `timed out after ${ms} ms`;
        throw new Error(`skiff ${how} before logging ${re}; log: ${this.#log.slice(-2000)}`);
      }
      await sleep(50);
    }
  }

  get pid(): number {
    return this.#child.pid;
  }

  get log(): string {
    return this.#log;
  }

  roots(): number[] {
    return [this.#child.pid];
  }

  events(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {
      received: 0,
      sent: 0,
      deferred: 0,
      rejected: 0,
      errors: 0,
    };
    for (const line of this.#log.split("\n")) {
      const m = line.match(/^\S+ (\w+) (\w+)/);
      if (!m) continue;
      const [, level, event] = m;
      if (event === "received") counts.received++;
      else if (event === "delivered") counts.sent++;
      else if (event === "deferred") counts.deferred++;
      else if (event === "reject" || event === "timeout") counts.rejected++;
      if (level === "error" || level === "fatal") counts.errors++;
    }
    return Promise.resolve(counts);
  }

  /** Lines of the log that are warnings or errors (first few), for the report. */
  problems(max = 5): string[] {
    return this.#log.split("\n").filter((l) => /^\S+ (warning|error|fatal) /.test(l)).slice(
      0,
      max,
    );
  }

  queued(): number {
    return countFiles(`${this.dir}/spool/queue`);
  }

  async stop(): Promise<void> {
    const exited = this.#child.status;
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    const done = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
    if (!done) {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
      await exited;
    }
    await Promise.race([this.#pumped, sleep(2000)]);
  }
}

const POSTFIX_SERVICES = `
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/**
 * A private Postfix instance: its own main.cf/master.cf, queue, data
 * directory and log file under `dir`, started with `postfix -c`. The system
 * instance is never touched. Stock settings except what a private loopback
 * instance needs: no chroot, no aliases, no TLS, one smtpd listener on
 * 127.0.0.1 allowing `maxproc` processes.
 */
export class Postfix implements Mta {
  readonly name = "Postfix";
  readonly port: number;
  readonly dir: string;

  private constructor(opts: MtaOptions) {
    this.port = opts.port;
    this.dir = opts.dir;
  }

  get #conf(): string {
    return `${this.dir}/conf`;
  }

  /** Writes the configuration, starts the instance and waits for its listener. */
  static async start(opts: MtaOptions & { maxproc: number }): Promise<Postfix> {
    const d = opts.dir;
    await Deno.mkdir(`${d}/conf`, { recursive: true });
    // Postfix's daemons (user postfix) must traverse every parent of the queue.
    await Deno.mkdir(`${d}/queue`, { mode: 0o755, recursive: true }); // exists on a restart
    await Deno.chmod(d, 0o755);
    await Deno.writeTextFile(
      `${d}/conf/main.cf`,
      `compatibility_level = 3.6
queue_directory = ${d}/queue
data_directory = ${d}/data
maillog_file = ${d}/maillog
maillog_file_prefixes = ${d}
syslog_name = postfix-bench
myhostname = postfix-bench.localdomain
mydestination = localhost
home_mailbox = Maildir/
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [${opts.relayhost.replace(/:(\d+)$/, "]:$1")}
smtpd_relay_restrictions = permit_mynetworks reject
smtpd_client_connection_count_limit = 0
alias_maps =
alias_database =
smtp_tls_security_level = none
smtpd_tls_security_level = none
`,
    );
    await Deno.writeTextFile(
      `${d}/conf/master.cf`,
      `127.0.0.1:${opts.port} inet n - n - ${opts.maxproc} smtpd${POSTFIX_SERVICES}`,
    );
    const pf = new Postfix(opts);
    await pf.#startInstance();
    try {
      await waitListening(opts.port, 20_000);
    } catch (err) {
      await pf.stop();
      throw err;
    }
    return pf;
  }

  async #startInstance(): Promise<void> {
    let res = await run(POSTFIX, ["-c", this.#conf, "start"], { timeoutMs: 90_000 });
    const out = res.stdout + res.stderr + (await this.#maillog());
    if (res.code !== 0 && /alternate_config_directories/.test(out)) {
      // Needed by non-root callers; as root `postfix -c` has been seen to work without it.
      await ensureAlternateConfigDir(this.#conf);
      res = await run(POSTFIX, ["-c", this.#conf, "start"], { timeoutMs: 90_000 });
    }
    if (res.code !== 0) {
      throw new Error(
        `postfix -c ${this.#conf} start failed (${res.code}): ${res.stderr}\n${await this
          .#maillog()}`,
      );
    }
  }

  async #maillog(): Promise<string> {
    return await Deno.readTextFile(`${this.dir}/maillog`).catch(() => "");
  }

  /** The master's pid (its children are every other Postfix process). */
  masterPid(): number | null {
    const text = readProc(`${this.dir}/queue/pid/master.pid`);
    const pid = text ? Number(text.trim()) : NaN;
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  roots(): number[] {
    const pid = this.masterPid();
    return pid === null ? [] : [pid];
  }

  async events(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {
      received: 0,
      sent: 0,
      deferred: 0,
      rejected: 0,
      errors: 0,
    };
    for (const line of (await this.#maillog()).split("\n")) {
      if (/\/cleanup\[\d+\]: \w+: message-id=/.test(line)) counts.received++;
      else if (/ status=sent /.test(line)) counts.sent++;
      else if (/ status=deferred /.test(line)) counts.deferred++;
      else if (/\/smtpd\[\d+\]: .*\breject: /.test(line)) counts.rejected++;
      if (/: (fatal|panic|error): /.test(line)) counts.errors++;
    }
    return counts;
  }

  /** Error lines of the log (first few), for the report. */
  async problems(max = 5): Promise<string[]> {
    return (await this.#maillog()).split("\n")
      .filter((l) => /: (fatal|panic|error|warning): |reject: /.test(l)).slice(0, max);
  }

  queued(): number {
    return ["incoming", "active", "deferred", "hold", "maildrop"]
      .reduce((n, q) => n + countFiles(`${this.dir}/queue/${q}`), 0);
  }

  /** `postfix stop`; then, if the master lingers, SIGKILL to it and its children. */
  async stop(): Promise<void> {
    const master = this.masterPid();
    const tree = master === null ? [] : processTree([master]);
    await run(POSTFIX, ["-c", this.#conf, "stop"], { timeoutMs: 20_000 }).catch(() => null);
    const deadline = Date.now() + 10_000;
    while (master !== null && readProc(`/proc/${master}/stat`) && Date.now() < deadline) {
      await sleep(100);
    }
    for (const pid of tree) {
      try {
        if (readProc(`/proc/${pid}/stat`)) Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
}

/**
 * Adds the directory to `alternate_config_directories` in the system
 * /etc/postfix/main.cf when it is not there (only called if `postfix -c`
 * asked for it). Nothing else of the system instance is changed.
 */
async function ensureAlternateConfigDir(dir: string): Promise<void> {
  const path = "/etc/postfix/main.cf";
  const text = await Deno.readTextFile(path);
  if (
    text.split("\n").some((l) => /^alternate_config_directories\s*=/.test(l) && l.includes(dir))
  ) {
    return;
  }
  const current = (await run("/usr/sbin/postconf", ["-h", "alternate_config_directories"])).stdout
    .trim();
  await Deno.writeTextFile(
    path,
    `${text.endsWith("\n") ? "" : "\n"}alternate_config_directories = ${
      current ? `${current}, ` : ""
    }${dir}\n`,
    { append: true },
  );
}

// ---------------------------------------------------------------------------
// smtp-sink and smtp-source

/** Postfix's smtp-sink counting what it receives (`-c`), discarding the mail. */
export class Sink {
  readonly port: number;
  #child: Deno.ChildProcess;
  #tail = "";
  count = 0;
  #pumped: Promise<void>;

  private constructor(port: number, child: Deno.ChildProcess) {
    this.port = port;
    this.#child = child;
    this.#pumped = this.#pump(child.stdout);
    child.stderr.cancel();
  }

  /** Starts a sink on a free port and waits until it listens. */
  static async start(): Promise<Sink> {
    const port = freePort();
    const args = ["-c", `127.0.0.1:${port}`, "256"];
    if (Deno.uid() === 0) args.unshift("-u", "nobody"); // smtp-sink refuses to run as root
    const child = new Deno.Command(SMTP_SINK, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const sink = new Sink(port, child);
    try {
      await waitListening(port, 10_000);
    } catch (err) {
      await sink.stop();
      throw err;
    }
    return sink;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) {
        // Counters are rewritten in place with CR: keep only the tail.
        this.#tail = (this.#tail + dec.decode(chunk, { stream: true })).slice(-200);
        const all = [...this.#tail.matchAll(/mesg=(\d+)/g)];
        if (all.length > 0) this.count = Number(all[all.length - 1][1]);
      }
    } catch { /* closed */ }
  }

  /** Resolves with the time (performance.now) when the count reached n, or null at the deadline. */
  async waitCount(n: number, ms: number): Promise<number | null> {
    const deadline = Date.now() + ms;
    while (this.count < n) {
      if (Date.now() > deadline) return null;
      await sleep(10);
    }
    return performance.now();
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    await this.#child.status;
    await Promise.race([this.#pumped, sleep(1000)]);
  }
}

/** Options for one smtp-source run. */
export interface SourceOptions {
  port: number;
  count: number;
  sessions: number;
  size: number;
  /** Recipients per message (-r); 1 by default. */
  rcpts?: number;
  /** The recipient; default user@example.net, made distinct per message (-N). */
  to?: string;
  timeoutMs: number;
}

/**
 * Runs smtp-source: `sessions` parallel sessions, one message per session
 * (it reconnects for each), each to a distinct recipient (`-N`). Without
 * `-A`, any reply other than the expected 2xx/3xx makes it stop with an error.
 */
export function smtpSource(o: SourceOptions): ReturnType<typeof run> {
  return run(SMTP_SOURCE, [
    "-s",
    String(o.sessions),
    "-m",
    String(o.count),
    "-l",
    String(o.size),
    "-r",
    String(o.rcpts ?? 1),
    ...(o.to ? [] : ["-N"]),
    "-f",
    "a@localhost",
    "-t",
    o.to ?? "user@example.net",
    `127.0.0.1:${o.port}`,
  ], { timeoutMs: o.timeoutMs });
}

// ---------------------------------------------------------------------------
// Idle connections

/** Opens `n` connections and waits for each one's 220 greeting; closes all on failure. */
export async function openIdle(port: number, n: number, ms: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  const deadline = Date.now() + ms;
  try {
    const BATCH = 25;
    for (let i = 0; i < n; i += BATCH) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(BATCH, n - i) }, async () => {
          const c = await Deno.connect({ hostname: "127.0.0.1", port });
          conns.push(c);
          return c;
        }),
      );
      await Promise.all(batch.map((c) => readGreeting(c, deadline)));
    }
    return conns;
  } catch (err) {
    closeAll(conns);
    throw err;
  }
}

async function readGreeting(c: Deno.TcpConn, deadline: number): Promise<void> {
  const buf = new Uint8Array(512);
  let text = "";
  // A greeting may span lines ("220-..."); it ends with a "220 " line.
  while (!/^220 [^\r\n]*\r\n/m.test(text)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error("Timed out waiting for a greeting");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      c.read(buf),
      new Promise<null>((r) => timer = setTimeout(() => r(null), left)),
    ]);
    clearTimeout(timer);
    if (n === null) throw new Error(`Connection closed before the greeting (${text.trim()})`);
    text += decoder.decode(buf.subarray(0, n));
    if (/^[45]\d\d /m.test(text)) throw new Error(`Refused: ${text.trim()}`);
  }
}

/** Closes every connection. */
export function closeAll(conns: Deno.TcpConn[]): void {
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed */ }
  }
}

/**
 * Measures skiff against a private Postfix instance on this machine and
 * prints a Markdown table of absolute numbers and skiff/Postfix ratios:
 * accept rate into the durable queue, end-to-end relay rate to smtp-sink,
 * peak memory during the accept run, and memory per idle connection.
 * docs/benchmarks.md explains each number and holds a recorded run.
 *
 *   ./scripts/deno task bench [--count N] [--only accept|relay|memory|idle]
 *                             [--dir D | --journaled] [--idle N]
 *
 * Runs as root (Postfix's daemons, smtp-sink's `-u nobody`, `--journaled`'s
 * loop mount). Loopback only; every load is bounded in count and time.
 */

import {
  closeAll,
  freePort,
  type Memory,
  memoryOf,
  MemorySampler,
  type Mta,
  openIdle,
  peakRss,
  POSTFIX,
  Postfix,
  processTree,
  ROOT,
  run,
  Sink,
  Skiff,
  sleep,
  SMTP_SINK,
  SMTP_SOURCE,
  smtpSource,
} from "./bench_lib.ts";
import { type Case, growthCases, matrixCases } from "./bench_cases.ts";
import { startupPhase, type StartupRow, startupTable } from "./bench_startup.ts";

const PHASES = ["accept", "relay", "local", "growth", "memory", "idle", "startup"] as const;
type Phase = typeof PHASES[number];
type Kind = "skiff" | "Postfix";
const KINDS: Kind[] = ["skiff", "Postfix"];

const MAX_COUNT = 20_000;
const MAX_IDLE = 1000;
const MAX_ROUNDS = 9;
const USAGE = "Usage: bench.ts [--quick] [--count N] " +
  "[--only accept|relay|growth|memory|idle|startup] [--dir D | --journaled] [--idle N] " +
  "[--rounds R] [--queued N,N] [--spool-sync syncfs|fdatasync] [--skiff CHECKOUT]";

interface Args {
  count: number;
  idle: number;
  only: Phase | null;
  dir: string | null;
  journaled: boolean;
  rounds: number;
  /** Small loads, one round, every phase: a smoke run for CI (no timing claims). */
  quick: boolean;
  /** Queue sizes for the start-up phase. */
  queued: number[];
  /** skiff's `queue.spool_sync` (default: its own default). */
  spoolSync: string | null;
  /** The skiff checkout to run (default: this one). */
  skiff: string | null;
}

function queueSize(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 200_000) {
    throw new Error(`--queued wants whole numbers from 0 to 200000, got ${v}`);
  }
  return n;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    count: 2000,
    idle: 500,
    only: null,
    dir: null,
    journaled: false,
    rounds: 3,
    quick: false,
    spoolSync: null,
    queued: [0, 20_000],
    skiff: null,
  };
  const number = (v: string | undefined, max: number, flag: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw new Error(`${flag} wants a whole number from 1 to ${max}, got ${v}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    if (f === "--count") a.count = number(argv[++i], MAX_COUNT, f);
    else if (f === "--idle") a.idle = number(argv[++i], MAX_IDLE, f);
    else if (f === "--rounds") a.rounds = number(argv[++i], MAX_ROUNDS, f);
    else if (f === "--only") {
      const v = argv[++i] as Phase;
      if (!PHASES.includes(v)) throw new Error(`--only wants one of ${PHASES.join("|")}`);
      a.only = v;
    } else if (f === "--dir") a.dir = argv[++i] ?? "";
    else if (f === "--journaled") a.journaled = true;
    else if (f === "--skiff") a.skiff = argv[++i] ?? "";
    else if (f === "--quick") a.quick = true;
    else if (f === "--spool-sync") {
      const v = argv[++i] ?? "";
      if (v !== "syncfs" && v !== "fdatasync") {
        throw new Error("--spool-sync wants syncfs|fdatasync");
      }
      a.spoolSync = v;
    } else if (f === "--queued") a.queued = (argv[++i] ?? "").split(",").map((v) => queueSize(v));
    else throw new Error(`Unknown argument ${f}\n${USAGE}`);
  }
  if (a.dir !== null && a.journaled) throw new Error("--dir and --journaled exclude each other");
  if (a.quick) {
    a.count = Math.min(a.count, 40);
    a.idle = Math.min(a.idle, 20);
    a.rounds = 1;
    a.queued = [0, 200];
  }
  return a;
}

// ---------------------------------------------------------------------------
// Runs

/** One MTA's numbers from one phase, plus what went wrong. */
interface RunResult {
  rate?: number;
  /** skiff: VmHWM of the process; Postfix: not meaningful (many processes). */
  hwm?: number;
  peak?: Memory;
  /**
   * Growth per idle connection, KiB. `single`: the MTA is one process, whose
   * PSS would be lowered by the pages its deno binary shares with this bench.
   */
  perConn?: { rss: number; pss: number; single: boolean };
  notes: string[];
}

/** The skiff checkout under test (`--skiff`); this one by default. */
let skiffRoot = ROOT;
/** `--spool-sync`, written into skiff's config when given. */
let spoolSync: string | null = null;

function startMta(
  kind: Kind,
  dir: string,
  opts: { relayhost: string; port?: number; connections?: number },
): Promise<Mta> {
  const port = opts.port ?? freePort();
  const connections = opts.connections ?? 100;
  return kind === "skiff"
    ? Skiff.start({
      dir,
      port,
      relayhost: opts.relayhost,
      connections,
      root: skiffRoot,
      spoolSync: spoolSync ?? undefined,
    })
    : Postfix.start({ dir, port, relayhost: opts.relayhost, maxproc: connections });
}

async function describe(mta: Mta, n: number, src: Awaited<ReturnType<typeof run>>) {
  const notes: string[] = [];
  if (src.timedOut) notes.push(`smtp-source timed out after ${(src.ms / 1000).toFixed(1)} s`);
  if (src.code !== 0 || src.stderr.trim()) {
    notes.push(`smtp-source exit ${src.code}: ${src.stderr.trim().split("\n").slice(0, 3)}`);
  }
  const ev = await mta.events();
  const summary = Object.entries(ev).map(([k, v]) => `${k}=${v}`).join(" ");
  notes.push(`log: ${summary}; queue files now: ${mta.queued()}`);
  if (ev.received !== n) notes.push(`**received ${ev.received} of ${n}**`);
  const problems = mta instanceof Skiff ? mta.problems(3) : await (mta as Postfix).problems(3);
  for (const p of problems) notes.push(`log line: \`${p.slice(0, 240)}\``);
  return notes;
}

/**
 * Accept rate: smtp-source pushes N messages over 20 sessions; the relayhost
 * is a closed port, so each MTA queues the mail, tries once, fails to
 * connect and defers it. Memory is sampled throughout.
 */
async function acceptRun(kind: Kind, dir: string, c: Case): Promise<RunResult> {
  const n = c.count;
  const closed = freePort(); // released at once: connecting to it is refused
  const mta = await startMta(kind, dir, { relayhost: `127.0.0.1:${closed}` });
  try {
    const sampler = new MemorySampler(() => mta.roots());
    const src = await smtpSource({
      port: mta.port,
      count: n,
      sessions: c.sessions,
      size: c.size,
      rcpts: c.rcpts,
      timeoutMs: 30_000 + n * (20 + c.size / 10_000) + n * c.rcpts,
    });
    await sleep(1500); // let the queue manager and the log catch up
    const peak = sampler.stop();
    const hwm = mta instanceof Skiff ? peakRss(mta.pid) : undefined;
    const notes = await describe(mta, n, src);
    notes.push(`memory after the run: ${fmtMem(memoryOf(processTree(mta.roots())))}`);
    const ok = src.code === 0 && !src.timedOut;
    return { rate: ok ? n / (src.ms / 1000) : undefined, peak, hwm, notes };
  } finally {
    await mta.stop();
  }
}

/**
 * End-to-end relay rate: both relay to one fresh smtp-sink each; the clock
 * runs from smtp-source's start until the sink has counted N messages.
 */
async function relayRun(kind: Kind, dir: string, c: Case): Promise<RunResult> {
  const n = c.count;
  const sink = await Sink.start();
  let mta: Mta | null = null;
  try {
    mta = await startMta(kind, dir, { relayhost: `127.0.0.1:${sink.port}` });
    const t0 = performance.now();
    const src = await smtpSource({
      port: mta.port,
      count: n,
      sessions: c.sessions,
      size: c.size,
      rcpts: c.rcpts,
      timeoutMs: 30_000 + n * 20,
    });
    // After a failed submission the sink cannot reach n: wait only briefly.
    const failed = src.code !== 0 || src.timedOut;
    const done = await sink.waitCount(n, failed ? 5000 : 30_000 + n * 30);
    await sleep(1000);
    const notes = await describe(mta, n, src);
    notes.push(`sink counted ${sink.count}; smtp-source took ${(src.ms / 1000).toFixed(2)} s`);
    if (done === null) notes.push(`**sink got ${sink.count} of ${n} before the deadline**`);
    return { rate: done === null ? undefined : n / ((done - t0) / 1000), notes };
  } finally {
    await mta?.stop();
    await sink.stop();
  }
}

/** The unix user both MTAs deliver to in the local run (created and removed by the bench). */
const LOCAL_USER = "skiffperf";

/**
 * Local delivery end to end: N messages to one local user; the clock runs
 * until the user's Maildir (skiff: under maildir_root; Postfix: local(8)
 * with home_mailbox = Maildir/ in the user's home) holds N messages.
 */
async function localRun(kind: Kind, dir: string, c: Case): Promise<RunResult> {
  const n = c.count;
  const home = `${dir}/home`;
  await Deno.mkdir(home, { recursive: true });
  await run("useradd", ["-M", "-d", home, "-s", "/usr/sbin/nologin", LOCAL_USER]);
  let mta: Mta | null = null;
  try {
    await run("chown", [LOCAL_USER, home]);
    mta = await startMta(kind, dir, { relayhost: `127.0.0.1:${freePort()}` });
    const maildir = kind === "skiff" ? `${dir}/mail/${LOCAL_USER}/new` : `${home}/Maildir/new`;
    const t0 = performance.now();
    const src = await smtpSource({
      port: mta.port,
      count: n,
      sessions: c.sessions,
      size: c.size,
      rcpts: 1,
      to: `${LOCAL_USER}@localhost`,
      timeoutMs: 30_000 + n * 20,
    });
    const failed = src.code !== 0 || src.timedOut;
    const deadline = Date.now() + (failed ? 5000 : 30_000 + n * 30);
    let got = 0;
    let done: number | null = null;
    while (Date.now() < deadline) {
      try {
        got = [...Deno.readDirSync(maildir)].length;
      } catch { /* not created yet */ }
      if (got >= n) {
        done = performance.now();
        break;
      }
      await sleep(20);
    }
    await sleep(500);
    const notes = await describe(mta, n, src);
    notes.push(`Maildir holds ${got}; smtp-source took ${(src.ms / 1000).toFixed(2)} s`);
    if (done === null) notes.push(`**Maildir got ${got} of ${n} before the deadline**`);
    return { rate: done === null ? undefined : n / ((done - t0) / 1000), notes };
  } finally {
    await mta?.stop();
    await run("userdel", [LOCAL_USER]);
  }
}

/**
 * Idle connections: RSS and PSS of the MTA's processes before and after
 * `count` connections that got their greeting and then say nothing.
 */
async function idleRun(kind: Kind, dir: string, count: number): Promise<RunResult> {
  const closed = freePort();
  const mta = await startMta(kind, dir, {
    relayhost: `127.0.0.1:${closed}`,
    connections: count + 100,
  });
  let conns: Deno.TcpConn[] = [];
  try {
    // A few connections first, so lazily compiled session code is not counted.
    closeAll(await openIdle(mta.port, 5, 20_000));
    await sleep(1500);
    const before = memoryOf(processTree(mta.roots()));
    conns = await openIdle(mta.port, count, 60_000);
    await sleep(1500);
    const after = memoryOf(processTree(mta.roots()));
    return {
      perConn: {
        rss: (after.rss - before.rss) / count,
        pss: (after.pss - before.pss) / count,
        single: mta instanceof Skiff,
      },
      notes: [
        `before: ${fmtMem(before)}; with ${count} idle: ${fmtMem(after)}`,
      ],
    };
  } finally {
    closeAll(conns);
    await mta.stop();
  }
}

function fmtMem(m: Memory): string {
  return `RSS ${(m.rss / 1024).toFixed(1)} MiB, PSS ${
    (m.pss / 1024).toFixed(1)
  } MiB over ${m.processes} processes`;
}

// ---------------------------------------------------------------------------
// Where the spools live

interface Place {
  dir: string;
  what: string;
  cleanup: () => Promise<void>;
}

async function place(a: Args): Promise<Place> {
  if (a.journaled) return await mountJournaled();
  const parent = a.dir ?? undefined;
  const dir = await Deno.makeTempDir({ dir: parent, prefix: "skiff-bench-" });
  await Deno.chmod(dir, 0o755);
  const fs = (await run("findmnt", ["-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--target", dir])).stdout
    .trim();
  return {
    dir,
    what: `${dir} (${fs})`,
    cleanup: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** A 400 MB ext4 image with a journal, loop-mounted, as production disks behave. */
async function mountJournaled(): Promise<Place> {
  const base = await Deno.makeTempDir({ prefix: "skiff-bench-img-" });
  await Deno.chmod(base, 0o755);
  const img = `${base}/ext4.img`;
  const mnt = `${base}/mnt`;
  let mounted = false;
  const cleanup = async () => {
    for (let i = 0; mounted && i < 10; i++) {
      if ((await run("umount", [mnt], { timeoutMs: 30_000 })).code === 0) mounted = false;
      else await sleep(500);
    }
    if (mounted) console.error(`bench: could not unmount ${mnt}; unmount it by hand`);
    else await Deno.remove(base, { recursive: true }).catch(() => {});
  };
  try {
    const f = await Deno.open(img, { create: true, write: true });
    await f.truncate(400 * 1024 * 1024);
    f.close();
    const mk = await run("mkfs.ext4", ["-q", "-F", "-O", "has_journal", img], {
      timeoutMs: 60_000,
    });
    if (mk.code !== 0) throw new Error(`mkfs.ext4 failed: ${mk.stderr}`);
    await Deno.mkdir(mnt);
    const mo = await run("mount", ["-o", "loop", img, mnt], { timeoutMs: 30_000 });
    if (mo.code !== 0) throw new Error(`mount failed: ${mo.stderr}`);
    mounted = true;
    await Deno.chmod(mnt, 0o755);
    return { dir: mnt, what: `${mnt} (loop-mounted 400 MB ext4 with a journal)`, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Report

/** Every round's result per case and MTA, plus the idle and start-up phases. */
interface Results {
  cases: { c: Case; group: "matrix" | "growth"; runs: Record<Kind, RunResult[]> }[];
  idle?: Record<Kind, RunResult[]>;
  startup?: StartupRow[];
}

function median(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined).sort((x, y) => x - y);
  if (v.length === 0) return undefined;
  const m = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function ratio(a?: number, b?: number): string {
  return a === undefined || b === undefined || b === 0 ? "–" : `${(a / b).toFixed(2)}×`;
}

function cell(values: (number | undefined)[], digits: number): string {
  const m = median(values);
  if (m === undefined) return "failed";
  const failed = values.filter((v) => v === undefined).length;
  return m.toFixed(digits) + (failed > 0 ? ` (${failed} of ${values.length} failed)` : "");
}

function mdTable(head: string[], rows: string[][]): string {
  return [head, head.map(() => "---"), ...rows].map((c) => `| ${c.join(" | ")} |`).join("\n");
}

function rates(runs: RunResult[]): (number | undefined)[] {
  return runs.map((x) => x.rate);
}

/** The matrix: each row's median rates, the ratio and the target. */
function matrixTable(r: Results): string {
  const rows = r.cases.filter((x) => x.group === "matrix").map(({ c, runs }) => {
    const s = median(rates(runs.skiff));
    const p = median(rates(runs.Postfix));
    const met = s === undefined || p === undefined || c.target === null
      ? "–"
      : s / p >= c.target
      ? "met"
      : "**not met**";
    return [
      `${c.label} (${c.count} msgs)`,
      cell(rates(runs.skiff), 0),
      cell(rates(runs.Postfix), 0),
      ratio(s, p),
      c.target === null ? "–" : `≥ ${c.target}×`,
      met,
    ];
  });
  return mdTable(["case", "skiff msg/s", "Postfix msg/s", "skiff/Postfix", "target", ""], rows);
}

/** Growth: per-message cost (ms of wall time per message and session) against size and recipients. */
function growthTable(r: Results): string {
  const rows = r.cases.filter((x) => x.group === "growth").map(({ c, runs }) => {
    const s = median(rates(runs.skiff));
    const p = median(rates(runs.Postfix));
    const ms = (v?: number) => v === undefined ? "failed" : (1000 * c.sessions / v).toFixed(2);
    const mbs = (v?: number) => v === undefined ? "failed" : (v * c.size / 1024 / 1024).toFixed(1);
    return [
      `${c.label} (${c.count} msgs, ${c.sessions} sessions)`,
      cell(rates(runs.skiff), 1),
      cell(rates(runs.Postfix), 1),
      ratio(s, p),
      ms(s),
      ms(p),
      `${mbs(s)} / ${mbs(p)}`,
    ];
  });
  return mdTable([
    "load",
    "skiff msg/s",
    "Postfix msg/s",
    "skiff/Postfix",
    "skiff ms/msg",
    "Postfix ms/msg",
    "MB/s skiff / Postfix",
  ], rows);
}

function memoryTable(r: Results, a: Args): string {
  const rows: string[][] = [];
  const add = (
    label: string,
    pick: (x: RunResult) => number | undefined,
    runs?: Record<Kind, RunResult[]>,
    digits = 1,
  ) => {
    if (!runs) return;
    const s = runs.skiff.map(pick);
    const p = runs.Postfix.map(pick);
    rows.push([label, cell(s, digits), cell(p, digits), ratio(median(s), median(p)), "lower"]);
  };
  const kib = (k?: number) => k === undefined ? undefined : k / 1024;
  const acc = r.cases.find((x) => x.c.id === "s20");
  if (acc) {
    const n = acc.c.count;
    add(
      `Peak memory accepting ${n} × 2 KB, MiB (skiff RSS high-water; Postfix summed PSS)`,
      (x) => kib(x.hwm ?? x.peak?.pss),
      acc.runs,
    );
    add(
      `Peak summed RSS accepting ${n} × 2 KB, MiB (shared pages counted per process)`,
      (x) => kib(x.hwm ?? x.peak?.rss),
      acc.runs,
    );
  }
  add(
    `Memory per idle connection, KiB (${a.idle} open; skiff RSS, Postfix PSS)`,
    (x) => x.perConn && (x.perConn.single ? x.perConn.rss : x.perConn.pss),
    r.idle,
  );
  add(`Summed RSS per idle connection, KiB (${a.idle} open)`, (x) => x.perConn?.rss, r.idle);
  return rows.length === 0
    ? ""
    : mdTable(["Measure", "skiff", "Postfix", "skiff/Postfix", "better"], rows);
}

function table(r: Results, a: Args): string {
  const parts: string[] = [];
  if (r.cases.some((x) => x.group === "matrix")) {
    parts.push(`### Matrix (median of ${a.rounds})\n\n${matrixTable(r)}`);
  }
  if (r.cases.some((x) => x.group === "growth")) {
    parts.push(`### Growth: cost per message against size and recipients\n\n${growthTable(r)}`);
  }
  const mem = memoryTable(r, a);
  if (mem) parts.push(`### Memory\n\n${mem}`);
  if (r.startup) parts.push(`### Start-up and queue listing\n\n${startupTable(r.startup)}`);
  return parts.join("\n\n");
}

function notes(r: Results): string {
  const out: string[] = [];
  const all: [string, Record<Kind, RunResult[]>][] = r.cases.map((x) => [x.c.id, x.runs]);
  if (r.idle) all.push(["idle", r.idle]);
  for (const [id, perKind] of all) {
    for (const kind of KINDS) {
      const runs = perKind[kind];
      if (runs.length > 1 && runs.some((x) => x.rate !== undefined)) {
        out.push(`- ${id}, ${kind}: msg/s per round: ${runs.map((x) => num(x.rate)).join(", ")}`);
      }
      runs.forEach((x, i) => {
        const tag = runs.length > 1 ? ` round ${i + 1}` : "";
        for (const n of x.notes) out.push(`- ${id}, ${kind}${tag}: ${n}`);
      });
    }
  }
  return out.join("\n");
}

function num(v: number | undefined): string {
  return v === undefined ? "failed" : v.toFixed(0);
}

function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

async function machine(where: string, loadBefore: string): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/^model name\s*:\s*(.*)$/m)?.[1];
  const pf = (await run("/usr/sbin/postconf", ["-d", "-h", "mail_version"])).stdout.trim();
  const kernel = (await run("uname", ["-r"])).stdout.trim();
  // Read-only git queries: which commit, and whether the code differs from it.
  const head = await run("git", ["-C", skiffRoot, "rev-parse", "--short", "HEAD"]);
  const dirty = await run("git", [
    "-C",
    skiffRoot,
    "diff",
    "--quiet",
    "HEAD",
    "--",
    "lib",
    "main.ts",
  ]);
  const rev = head.code !== 0
    ? "not a git checkout"
    : `commit ${head.stdout.trim()}${dirty.code === 0 ? "" : " plus uncommitted changes"}`;
  return [
    `- CPU: ${navigator.hardwareConcurrency} × ${cpu ?? "unknown"}; Linux ${kernel}`,
    `- Deno ${Deno.version.deno}; Postfix ${pf}; skiff from ${skiffRoot} (${rev})`,
    `- Spools and queues in ${where}`,
    `- Load average (1, 5, 15 min) before: ${loadBefore}; after: ${loadavg()} ` +
    "(anything above ~0.5 means other work shared the two cores)",
  ].join("\n");
}

// ---------------------------------------------------------------------------

/** Runs one measurement; a failure becomes a result with a note, not an abort. */
async function attempt(label: string, fn: () => Promise<RunResult>): Promise<RunResult> {
  const t = performance.now();
  console.error(`bench: ${label} ...`);
  try {
    const v = await fn();
    const rate = v.rate === undefined ? "" : `: ${v.rate.toFixed(0)} msg/s`;
    console.error(
      `bench: ${label} done in ${((performance.now() - t) / 1000).toFixed(1)} s${rate}`,
    );
    return v;
  } catch (err) {
    console.error(`bench: ${label} failed: ${err instanceof Error ? err.stack : err}`);
    return { notes: [`**failed: ${String(err).split("\n")[0]}**`] };
  }
}

/**
 * Each case is repeated `rounds` times, the order of the two MTAs swapped
 * each round and the cases interleaved, so a burst of other load hits both
 * alike; the table shows medians. Idle and start-up run once.
 */
async function measure(a: Args, base: string): Promise<Results> {
  const want = (p: Phase) => a.only === null || a.only === p;
  const results: Results = { cases: [] };
  let i = 0;
  const sub = (name: string) => `${base}/${++i}-${name}`;
  // --quick keeps one case per code path: accept 2 KB and 1 MB, relay, local.
  const quickIds = new Set(["s20", "m1", "relay", "local"]);
  for (const c of matrixCases(a.count, a.quick, a.journaled)) {
    if (a.quick && !quickIds.has(c.id)) continue;
    if (want(c.kind) || (c.id === "s20" && want("memory"))) {
      results.cases.push({ c, group: "matrix", runs: { skiff: [], Postfix: [] } });
    }
  }
  if (want("growth")) {
    for (const c of growthCases(a.count, a.quick)) {
      results.cases.push({ c, group: "growth", runs: { skiff: [], Postfix: [] } });
    }
  }
  for (let round = 0; round < a.rounds; round++) {
    const order = round % 2 === 0 ? KINDS : [...KINDS].reverse();
    for (const { c, runs } of results.cases) {
      const fn = c.kind === "accept" ? acceptRun : c.kind === "relay" ? relayRun : localRun;
      for (const k of order) {
        // Each run's queue is deleted after it, so big-message runs cannot fill
        // the file system (the --journaled image is 400 MB).
        const dir = sub(`${c.id}-${k}`);
        const drop = () => Deno.remove(dir, { recursive: true }).catch(() => {});
        const once = () => fn(k, dir, c).finally(drop);
        runs[k].push(await attempt(`${c.id} ${k} (round ${round + 1})`, once));
      }
    }
  }
  if (want("idle")) {
    results.idle = { skiff: [], Postfix: [] };
    for (const k of KINDS) {
      results.idle[k].push(await attempt(`idle ${k}`, () => idleRun(k, sub(`idle-${k}`), a.idle)));
    }
  }
  if (want("startup")) results.startup = await startupPhase(a.queued, sub, skiffRoot);
  return results;
}

async function main(): Promise<number> {
  let a: Args;
  try {
    a = parseArgs(Deno.args);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    return 64;
  }
  for (const bin of [SMTP_SOURCE, SMTP_SINK, POSTFIX]) {
    try {
      Deno.statSync(bin);
    } catch {
      console.error(`bench: ${bin} is missing: apt-get install postfix`);
      return 69;
    }
  }
  if (a.skiff !== null) skiffRoot = a.skiff.replace(/\/*$/, "/");
  spoolSync = a.spoolSync;
  if (Deno.uid() !== 0) console.error("bench: not root; the private Postfix may not start");
  const started = performance.now();
  const loadBefore = loadavg();
  const where = await place(a);
  let results: Results;
  try {
    results = await measure(a, where.dir);
  } finally {
    await where.cleanup();
  }
  const secs = ((performance.now() - started) / 1000).toFixed(0);
  const rounds = `; each case: median of ${a.rounds} round(s)`;
  const sync = `- skiff \`queue.spool_sync\`: ${a.spoolSync ?? "its default (syncfs)"}`;
  console.log(`## skiff vs Postfix\n\n${await machine(where.what, loadBefore)}\n${sync}\n`);
  console.log(table(results, a));
  console.log(`\nWhole run: ${secs} s${rounds}.\n\nNotes:\n\n${notes(results)}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());

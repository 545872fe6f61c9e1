/**
 * The start-up phase of the benchmark (issue 13): with 0, 20,000 or 100,000
 * messages queued, how long until the first `220`, how long `mailq` takes
 * and how much memory it and the manager use. skiff's queue is written
 * straight into its spool (deferred for an hour, as a backlog would be);
 * Postfix's is filled through SMTP with the relayhost on a closed port (so
 * only sizes it can fill in reasonable time are run for it).
 */

import { fillSpool } from "../tests/queue_fill.ts";
import {
  freePort,
  memoryOf,
  Postfix,
  processTree,
  run,
  Skiff,
  sleep,
  smtpSource,
} from "./bench_lib.ts";

/** One row: both MTAs at one queue size (undefined: not measured). */
export interface StartupRow {
  queued: number;
  skiff: StartupResult;
  postfix?: StartupResult;
  notes: string[];
}

/** What one MTA did with `queued` messages in its queue. */
export interface StartupResult {
  /** Seconds from the start command to the first 220 greeting. */
  first220?: number;
  /** Seconds for mailq to list the whole queue; its peak RSS in MiB. */
  mailq?: number;
  mailqRss?: number;
  /** MTA memory (skiff RSS, Postfix summed PSS) once the queue is loaded, MiB. */
  memory?: number;
}

/** Postfix is filled through SMTP only up to this many (N/300 s quiet, N/20 s on a busy machine). */
const POSTFIX_FILL_MAX = 2_000;

/** Writes `n` deferred 2 KB messages into a skiff spool (fast: no fsync; one `sync` at the end). */
async function fillSkiff(spool: string, n: number): Promise<void> {
  fillSpool(spool, n, { size: 2000 });
  await run("sync", [], { timeoutMs: 120_000 });
}

/** Polls until a connection gets "220"; resolves with performance.now() then. */
async function first220(port: number, deadlineMs: number): Promise<number | undefined> {
  const deadline = Date.now() + deadlineMs;
  const buf = new Uint8Array(64);
  while (Date.now() < deadline) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        const n = await c.read(buf);
        if (n && new TextDecoder().decode(buf.subarray(0, n)).startsWith("220")) {
          return performance.now();
        }
      } finally {
        c.close();
      }
    } catch { /* not listening yet */ }
    await sleep(5);
  }
  return undefined;
}

/** Runs a command under /usr/bin/time: wall seconds and peak RSS (MiB). */
async function timed(cmd: string, args: string[], cwd?: string) {
  const r = await run("/usr/bin/time", ["-f", "TIME %e %M", cmd, ...args], {
    timeoutMs: 300_000,
    cwd,
  });
  const m = r.stderr.match(/TIME ([\d.]+) (\d+)/);
  return {
    ok: r.code === 0 && m !== null,
    secs: m ? Number(m[1]) : undefined,
    rss: m ? Number(m[2]) / 1024 : undefined,
    lines: r.stdout.split("\n").length,
    err: r.stderr.slice(0, 300),
  };
}

async function skiffAt(dir: string, n: number, root: string, notes: string[]) {
  await Deno.mkdir(dir, { recursive: true });
  if (n > 0) await fillSkiff(`${dir}/spool`, n);
  const port = freePort();
  const t0 = performance.now();
  const greeted = first220(port, 120_000);
  const skiff = await Skiff.start({
    dir,
    port,
    relayhost: `127.0.0.1:${freePort()}`,
    connections: 100,
    root,
  });
  const res: StartupResult = {};
  try {
    const t = await greeted;
    res.first220 = t === undefined ? undefined : (t - t0) / 1000;
    // The scan runs in the background: wait for its log line, then read memory.
    const deadline = Date.now() + 300_000;
    while (!/queue scanned/.test(skiff.log) && Date.now() < deadline) await sleep(100);
    if (!/queue scanned/.test(skiff.log)) notes.push(`skiff ${n}: no "queue scanned" log line`);
    await sleep(500);
    res.memory = memoryOf(processTree(skiff.roots()), false).rss / 1024;
    const q = await timed(Deno.execPath(), [
      "run",
      "--quiet",
      "--config",
      `${root}deno.json`,
      "--allow-all",
      `${root}main.ts`,
      "--config",
      `${dir}/skiff.toml`,
      "mailq",
    ], dir);
    if (!q.ok) notes.push(`skiff mailq at ${n} failed: ${q.err}`);
    res.mailq = q.secs;
    res.mailqRss = q.rss;
    notes.push(`skiff ${n}: mailq printed ${q.lines} lines`);
  } finally {
    await skiff.stop();
  }
  return res;
}

async function postfixAt(dir: string, n: number, notes: string[]) {
  const port = freePort();
  const opts = { dir, port, relayhost: `127.0.0.1:${freePort()}`, maxproc: 100 };
  let pf = await Postfix.start(opts);
  if (n > 0) {
    const src = await smtpSource({
      port,
      count: n,
      sessions: 20,
      size: 2048,
      rcpts: 1,
      timeoutMs: 60_000 + n * 20,
    });
    if (src.code !== 0) notes.push(`Postfix fill: smtp-source exit ${src.code} ${src.stderr}`);
    await sleep(3000);
  }
  await pf.stop();
  notes.push(`Postfix ${n}: ${pf.queued()} queue files before the restart`);
  const t0 = performance.now();
  const greeted = first220(port, 120_000);
  pf = await Postfix.start(opts);
  const res: StartupResult = {};
  try {
    const t = await greeted;
    res.first220 = t === undefined ? undefined : (t - t0) / 1000;
    await sleep(2000);
    res.memory = memoryOf(processTree(pf.roots())).pss / 1024;
    const q = await timed("/usr/sbin/postqueue", ["-c", `${dir}/conf`, "-p"]);
    if (!q.ok) notes.push(`postqueue -p at ${n} failed: ${q.err}`);
    res.mailq = q.secs;
    res.mailqRss = q.rss;
  } finally {
    await pf.stop();
  }
  return res;
}

/** Measures both MTAs at each queue size. */
export async function startupPhase(
  sizes: number[],
  sub: (name: string) => string,
  root: string,
): Promise<StartupRow[]> {
  const rows: StartupRow[] = [];
  for (const n of sizes) {
    const notes: string[] = [];
    console.error(`bench: start-up with ${n} queued ...`);
    const skiff = await skiffAt(sub(`startup-skiff-${n}`), n, root, notes).catch((e) => {
      notes.push(`skiff failed: ${String(e).slice(0, 300)}`);
      return {};
    });
    let postfix: StartupResult | undefined;
    if (n <= POSTFIX_FILL_MAX) {
      postfix = await postfixAt(sub(`startup-postfix-${n}`), n, notes).catch((e) => {
        notes.push(`Postfix failed: ${String(e).slice(0, 300)}`);
        return {};
      });
    } else notes.push(`Postfix not filled to ${n} (SMTP fill would take too long)`);
    rows.push({ queued: n, skiff, postfix, notes });
  }
  return rows;
}

/** The start-up table, with skiff's manager memory per queued message. */
export function startupTable(rows: StartupRow[]): string {
  const f = (v: number | undefined, d: number) => v === undefined ? "–" : v.toFixed(d);
  const base = rows.find((r) => r.queued === 0)?.skiff.memory;
  const head = [
    "queued",
    "first 220 s: skiff / Postfix",
    "mailq s: skiff / Postfix",
    "mailq peak RSS MiB: skiff / Postfix",
    "MTA memory MiB: skiff RSS / Postfix PSS",
    "skiff bytes per queued msg",
  ];
  const body = rows.map((r) => {
    const per = base !== undefined && r.skiff.memory !== undefined && r.queued > 0
      ? ((r.skiff.memory - base) * 1024 * 1024 / r.queued).toFixed(0)
      : "–";
    return [
      String(r.queued),
      `${f(r.skiff.first220, 2)} / ${f(r.postfix?.first220, 2)}`,
      `${f(r.skiff.mailq, 2)} / ${f(r.postfix?.mailq, 2)}`,
      `${f(r.skiff.mailqRss, 0)} / ${f(r.postfix?.mailqRss, 0)}`,
      `${f(r.skiff.memory, 0)} / ${f(r.postfix?.memory, 0)}`,
      per,
    ];
  });
  const notes = rows.flatMap((r) => r.notes.map((n) => `- ${n}`));
  return [head, head.map(() => "---"), ...body].map((c) => `| ${c.join(" | ")} |`).join("\n") +
    (notes.length ? `\n\n${notes.join("\n")}` : "");
}

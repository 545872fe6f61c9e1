/**
 * Measures spool commits per second to choose the file layout by numbers:
 * (a) one file — header, content, then journal — as lib/spool implements it,
 * and (b) two files, data and control, each synced, the control file
 * renamed last as the commit marker. Each is run with sequential and with 20
 * concurrent writers of 2 KB messages, with and without coalescing of the
 * queue/ directory fsync; and (c) the one file with syncfs group commit,
 * as `skiff serve` runs it (one syncfs per batch for data, one for renames).
 *
 *   ./scripts/deno run --allow-all scripts/bench_spool.ts [--dir D] [--count N] [--rounds R]
 */

import { DirSyncer, type Envelope, newQueueId, Spool, writeAll } from "../lib/spool/mod.ts";

const MAX_COUNT = 20_000;
const CONCURRENCY = 20;
const MESSAGE = makeMessage(2048);

function makeMessage(size: number): Uint8Array {
  const line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm\r\n";
  const text = `From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n${
    line.repeat(Math.ceil(size / line.length))
  }`;
  return new TextEncoder().encode(text.slice(0, size - 2) + "\r\n");
}

function envelope(id: string): Envelope {
  return {
    id,
    from: "sender@example.org",
    recipients: [{ address: "rcpt@example.net", notify: ["FAILURE"] }],
    received: Date.now(),
    client: { address: "192.0.2.1", helo: "client.example.org" },
    protocol: "ESMTP",
    size: MESSAGE.length,
  };
}

type Commit = () => Promise<void>;

/** (a) The real spool: one file, each file fdatasync'ed, queue/ fsyncs coalesced. */
function oneFile(root: string, syncer: DirSyncer): Commit {
  const spool = new Spool(root, { dirSyncer: syncer, sync: "fdatasync" });
  return async () => {
    const w = await spool.begin();
    await w.write(MESSAGE);
    await w.commit(envelope(w.id));
  };
}

/** (c) The real spool as `skiff serve` runs it: one file, syncfs group commit. */
function oneFileSyncfs(root: string, _syncer: DirSyncer): Commit {
  const spool = new Spool(root, { sync: "syncfs" });
  return async () => {
    const w = await spool.begin();
    await w.write(MESSAGE);
    await w.commit(envelope(w.id));
  };
}

/** (b) Data and control files, both through incoming/, control renamed last. */
function twoFiles(root: string, syncer: DirSyncer): Commit {
  const enc = new TextEncoder();
  const put = async (path: string, data: Uint8Array) => {
    const f = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
    try {
      await writeAll(f, data);
      await f.syncData();
    } finally {
      f.close();
    }
  };
  return async () => {
    const id = newQueueId();
    await put(`${root}/incoming/${id}.d`, MESSAGE);
    const ctl = enc.encode(JSON.stringify({ t: "envelope", ...envelope(id) }) + "\n");
    await put(`${root}/incoming/${id}.c`, ctl);
    await Deno.rename(`${root}/incoming/${id}.d`, `${root}/queue/${id}.d`);
    await Deno.rename(`${root}/incoming/${id}.c`, `${root}/queue/${id}.c`);
    await syncer.sync(`${root}/queue`);
  };
}

async function run(commit: Commit, count: number, writers: number): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: writers }, async () => {
    while (next < count) {
      next++;
      await commit();
    }
  }));
  return count / ((performance.now() - start) / 1000);
}

function arg(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const count = Math.min(MAX_COUNT, Math.max(1, Number(arg("--count") ?? 1000)));
const rounds = Math.min(9, Math.max(1, Number(arg("--rounds") ?? 3)));
const base = arg("--dir") ?? await Deno.makeTempDir({ prefix: "bench_spool_" });
const configs: { layout: string; make: typeof oneFile; writers: number; coalesce: boolean }[] = [];
const layouts = [
  ["one file, syncfs", oneFileSyncfs],
  ["one file", oneFile],
  ["two files", twoFiles],
] as const;
for (const [layout, make] of layouts) {
  for (const writers of [1, CONCURRENCY]) {
    const plain = writers === 1 || make === oneFileSyncfs || Deno.args.includes("--short");
    for (const coalesce of plain ? [true] : [false, true]) {
      configs.push({ layout, make, writers, coalesce });
    }
  }
}
// Rounds interleave the configurations so a burst of load elsewhere on the
// machine hits them all alike; the table shows the median round.
const rates = configs.map(() => [] as number[]);
const fsyncs = configs.map(() => 0);
for (let round = 0; round < rounds; round++) {
  for (const [i, c] of configs.entries()) {
    const root = `${base}/${c.layout.replace(/\W+/g, "_")}_${c.writers}_${c.coalesce}`;
    await new Spool(root).init();
    const syncer = new DirSyncer({ coalesce: c.coalesce });
    const commit = c.make(root, syncer);
    await run(commit, Math.min(50, count), c.writers); // warm up
    const before = syncer.syncs;
    rates[i].push(await run(commit, count, c.writers));
    fsyncs[i] += syncer.syncs - before;
    await Deno.remove(root, { recursive: true });
  }
}
if (!arg("--dir")) await Deno.remove(base, { recursive: true });

const rows = configs.map((c, i) => {
  const sorted = rates[i].toSorted((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  return [
    c.layout,
    String(c.writers),
    c.writers === 1 ? "-" : c.coalesce ? "coalesced" : "per commit",
    median.toFixed(0),
    `${sorted[0].toFixed(0)}-${sorted[sorted.length - 1].toFixed(0)}`,
    (1000 / median).toFixed(3),
    (fsyncs[i] / (count * rounds)).toFixed(2),
  ];
});
const head = [
  "layout",
  "writers",
  "dir fsync",
  "commits/s",
  "range",
  "ms/commit",
  "dir fsyncs/commit",
];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const fmt = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(
  `${count} commits of ${MESSAGE.length}-byte messages per row and round, ` +
    `median of ${rounds} rounds, dir ${base}`,
);
console.log(fmt(head));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(fmt(r));

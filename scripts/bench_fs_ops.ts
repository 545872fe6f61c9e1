/**
 * Counts the async file-system calls (each a hand-off to Deno's blocking
 * thread pool) that the spool makes per accepted message, for the lever
 * "fewer async fs calls per message" of issue 13. It wraps the Deno APIs
 * the spool uses, then commits 2 KB messages (sequentially and with 20 at
 * once, so shared syncs show as fractions) and appends one deferral record
 * to each twice: with Spool.append (notices, expiry) and through a
 * JournalWriter held for a delivery pass (open, append, close), as the
 * queue manager's first attempt does.
 *
 *   ./scripts/deno run --allow-all scripts/bench_fs_ops.ts [--skiff CHECKOUT] [--count N]
 *
 * `--skiff` points at another checkout (e.g. `git archive` of an older
 * commit) to count its spool instead of this one's.
 */

const counts = new Map<string, number>();
const bump = (name: string) => counts.set(name, (counts.get(name) ?? 0) + 1);

// deno-lint-ignore no-explicit-any
function wrap(obj: any, name: string, label: string): void {
  const orig = obj[name];
  obj[name] = function (...args: unknown[]) {
    bump(label);
    return orig.apply(this, args);
  };
}

wrap(Deno, "open", "open");
wrap(Deno, "writeFile", "writeFile");
wrap(Deno, "rename", "rename");
wrap(Deno, "remove", "remove");
wrap(Deno.FsFile.prototype, "write", "write");
wrap(Deno.FsFile.prototype, "read", "read");
wrap(Deno.FsFile.prototype, "seek", "seek");
wrap(Deno.FsFile.prototype, "syncData", "fdatasync");
wrap(Deno.FsFile.prototype, "sync", "fsync");

function arg(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const root = (arg("--skiff") ?? new URL("..", import.meta.url).pathname).replace(/\/*$/, "/");
const count = Math.min(5000, Number(arg("--count") ?? 200));
const { Spool } = await import(`${root}lib/spool/mod.ts`);
const { JournalWriter } = await import(`${root}lib/spool/journal_writer.ts`);
const body = new TextEncoder().encode("Subject: x\r\n\r\n" + "y".repeat(2030) + "\r\n");

async function one(spool: InstanceType<typeof Spool>): Promise<string> {
  const w = await spool.begin();
  await w.write(body);
  await w.commit({
    id: w.id,
    from: "a@example.org",
    recipients: [{ address: "b@example.net" }],
    received: Date.now(),
    client: { address: "127.0.0.1", helo: "x" },
    protocol: "ESMTP",
    size: body.length,
  });
  return w.id;
}

function deferral() {
  const at = Date.now();
  return { t: "deferred", rcpt: 0, at, until: at + 60_000, dsn: "4.4.1", text: "refused" };
}

const report: string[] = [];
for (const writers of [1, 20]) {
  const dir = await Deno.makeTempDir({ prefix: "bench_fs_ops_" });
  const spool = new Spool(dir);
  await spool.init();
  counts.clear();
  // Syncs through FFI are counted from the spool's own counters (if it has them).
  const ids: string[] = [];
  for (let i = 0; i < count; i += writers) {
    ids.push(...await Promise.all(Array.from({ length: writers }, () => one(spool))));
  }
  const commit = new Map(counts);
  counts.clear();
  for (let i = 0; i < ids.length; i += writers) {
    await Promise.all(
      ids.slice(i, i + writers).map((id) => spool.append(id, [deferral()])),
    );
  }
  const append = new Map(counts);
  counts.clear();
  const syncsBefore = (spool as { syncs?: { data: number; dir: number } }).syncs;
  for (let i = 0; i < ids.length; i += writers) {
    await Promise.all(
      ids.slice(i, i + writers).map(async (id) => {
        const j = await JournalWriter.open(spool.path(id), id);
        await j.append([deferral()]);
        await j.close();
      }),
    );
  }
  const pass = new Map(counts);
  const syncs = (spool as { syncs?: { data: number; dir: number; mode: string } }).syncs;
  // The journal-writer pass syncs by fdatasync (counted above), never by the spool's syncfs.
  if (syncs && syncsBefore && syncs.data + syncs.dir !== syncsBefore.data + syncsBefore.dir) {
    throw new Error("A journal-writer pass made a syncfs");
  }
  const fmt = (m: Map<string, number>) =>
    [...m].map(([k, v]) => `${k} ${(v / ids.length).toFixed(2)}`).join(", ");
  const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0) / ids.length;
  const shared = syncs && syncs.mode === "syncfs" ? (syncs.data + syncs.dir) / ids.length : 0;
  report.push(
    `| ${writers} | ${(total(commit) + shared).toFixed(2)} | ${fmt(commit)}${
      shared ? `, syncfs ${shared.toFixed(2)} (commit + append)` : ""
    } | ${total(append).toFixed(2)} | ${fmt(append)} | ${total(pass).toFixed(2)} | ${fmt(pass)} |`,
  );
  await Deno.remove(dir, { recursive: true });
}
console.log(`${count} messages of ${body.length} bytes; spool from ${root}; calls per message`);
console.log(
  "| writers | commit total | commit calls | append total | append calls | pass total | pass calls |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const r of report) console.log(r);

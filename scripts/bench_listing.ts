/**
 * What a queue listing costs the running manager (issue 13): with N
 * messages written straight into the spool, runs `mailq` against a live
 * `skiff serve` while a probe opens an SMTP connection every 20 ms and
 * times its `220` greeting. Prints mailq's time and peak RSS, the
 * manager's RSS before and after, and the greeting times with and without
 * a listing running (the worst is the longest the manager's event loop
 * was kept from a new connection, plus the machine's scheduling delay).
 *
 *   ./scripts/deno run -A scripts/bench_listing.ts [N=100000] [--skiff CHECKOUT]
 */
import { fillSpool } from "../tests/queue_fill.ts";
import { freePort, memoryOf, processTree, ROOT, run, Skiff, sleep } from "./bench_lib.ts";

const args = [...Deno.args];
const at = args.indexOf("--skiff");
const root = at >= 0 ? args.splice(at, 2)[1].replace(/\/*$/, "/") : ROOT;
const n = Number(args[0] ?? 100_000);
if (!Number.isSafeInteger(n) || n < 0 || n > 200_000) throw new Error(`N from 0 to 200000: ${n}`);

/** Greeting times (ms) of connections made every 20 ms until `stop()`; at most 10 minutes. */
function probe(port: number) {
  const times: number[] = [];
  let stopped = false;
  const done = (async () => {
    const buf = new Uint8Array(64);
    const deadline = Date.now() + 600_000;
    while (!stopped && Date.now() < deadline) {
      const t = performance.now();
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await c.read(buf);
      } finally {
        c.close();
      }
      times.push(performance.now() - t);
      await sleep(20);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
      const sorted = [...times].sort((a, b) => a - b);
      const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
      return { count: times.length, median: q(0.5), p99: q(0.99), worst: sorted.at(-1) ?? 0 };
    },
  };
}

const dir = await Deno.makeTempDir({ prefix: "skiff-bench-listing-" });
try {
  const t0 = performance.now();
  fillSpool(`${dir}/spool`, n, { size: 2000 });
  await run("sync", [], { timeoutMs: 120_000 });
  console.error(`filled ${n} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const port = freePort();
  const skiff = await Skiff.start({
    dir,
    port,
    relayhost: `127.0.0.1:${freePort()}`,
    connections: 100,
    root,
  });
  try {
    const deadline = Date.now() + 300_000;
    while (!/queue scanned/.test(skiff.log) && Date.now() < deadline) await sleep(100);
    await sleep(1000);
    const rss = () => (memoryOf(processTree(skiff.roots()), false).rss / 1024).toFixed(0);
    const before = rss();
    const idle = probe(port);
    await sleep(3000);
    const quiet = await idle.stop();
    const busy = probe(port);
    const q = await run("/usr/bin/time", [
      "-f",
      "TIME %e %M",
      Deno.execPath(),
      "run",
      "--quiet",
      "--config",
      `${root}deno.json`,
      "--allow-all",
      `${root}main.ts`,
      "--config",
      `${dir}/skiff.toml`,
      "mailq",
    ], { timeoutMs: 600_000, cwd: dir });
    const listing = await busy.stop();
    const m = q.stderr.match(/TIME ([\d.]+) (\d+)/);
    const lines = q.stdout.split("\n").length - 1;
    const f = (x: number) => x.toFixed(1);
    console.log(`queued: ${n}; mailq exit ${q.code}, ${lines} lines`);
    console.log(`mailq: ${m?.[1]} s, peak RSS ${m ? (Number(m[2]) / 1024).toFixed(0) : "?"} MiB`);
    console.log(`manager RSS: ${before} MiB before the listing, ${rss()} MiB after`);
    for (
      const [name, p] of [["without a listing", quiet], ["during the listing", listing]] as const
    ) {
      console.log(
        `220 greeting ${name}: ${p.count} probes, median ${f(p.median)} ms, ` +
          `p99 ${f(p.p99)} ms, worst ${f(p.worst)} ms`,
      );
    }
  } finally {
    await skiff.stop();
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

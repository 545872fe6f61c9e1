/**
 * What does an idle SMTP connection cost the manager, and of what kind?
 * Runs skiff's real listener in this process (or, for comparison, a bare
 * node:net server that only writes a 220), has a child process open N
 * connections that read their greeting and then say nothing, and prints
 * the growth of RSS, the V8 heap and external memory per connection after a
 * forced GC, plus the heap growth by object kind (from two V8 heap
 * snapshots). The bench (`--only idle`) measures the same from outside;
 * this says where the bytes are (issue 13, docs/benchmarks.md).
 *
 *   ./scripts/deno run -A --v8-flags=--expose-gc scripts/probe_idle.ts [KIND] [N] [TOP]
 *
 * KIND: skiff (the listener, logging into /dev/null), net (a bare node:net
 * server writing a 220), conn (that plus a Conn with one pending read), or
 * serve (a real `skiff serve` measured from /proc as the bench does, no
 * forced GC; PROBE_ROOT=/path runs another checkout, e.g. a `git archive`
 * of main). PROBE_NO_GC=1 skips the forced GCs (what the bench sees),
 * PROBE_NO_LOG=1 leaves logging unconfigured, PROBE_NET_VARIANT=nodelay,data,cb
 * varies the bare server. TOP: how many heap kinds to print.
 */
import v8 from "node:v8";
import * as net from "node:net";
import { parseConfig } from "../lib/config/load.ts";
import { startSmtpListener } from "../lib/listen/smtp_listener.ts";
import { Spool } from "../lib/spool/spool.ts";
import { Conn } from "../lib/net/conn.ts";
import { setupLogging } from "../lib/log/log.ts";
import {
  closeAll,
  freePort,
  memoryOf,
  openIdle as openIdleHere,
  processTree,
  Skiff,
  sleep,
} from "./bench_lib.ts";

const MAX_CONNS = 2000;

/** The child: opens n connections to port, reads each greeting, then waits for stdin to close. */
async function client(port: number, n: number): Promise<void> {
  const conns: Deno.TcpConn[] = [];
  const buf = new Uint8Array(512);
  for (let i = 0; i < n; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(c);
    let text = "";
    while (!text.includes("\r\n")) {
      const got = await c.read(buf);
      if (got === null) throw new Error(`Connection ${i} closed before its greeting`);
      text += new TextDecoder().decode(buf.subarray(0, got));
    }
  }
  console.log("ready");
  for await (const _ of Deno.stdin.readable) { /* wait for the parent to close stdin */ }
  for (const c of conns) c.close();
}

/** Bytes V8 has allocated so far (Deno reports it; node's types do not list it). */
function allocated(): number {
  return (v8.getHeapStatistics() as { total_allocated_bytes?: number }).total_allocated_bytes ?? 0;
}

function gc(): void {
  if (Deno.env.get("PROBE_NO_GC")) return;
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) throw new Error("Run with --v8-flags=--expose-gc");
  for (let i = 0; i < 3; i++) g();
}

/** Self sizes in a heap snapshot, summed per "type:name". */
function heapByKind(): Map<string, { size: number; count: number }> {
  const path = v8.writeHeapSnapshot(`/tmp/probe_idle-${Deno.pid}.heapsnapshot`);
  const snap = JSON.parse(Deno.readTextFileSync(path));
  Deno.removeSync(path);
  const fields: string[] = snap.snapshot.meta.node_fields;
  const types: string[] = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [t, n, s] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const out = new Map<string, { size: number; count: number }>();
  const nodes: number[] = snap.nodes;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + t]];
    let name = type === "object" || type === "native" || type === "closure"
      ? snap.strings[nodes[i + n]]
      : "";
    if (name.length > 60) name = name.slice(0, 60);
    const key = `${type}:${name}`;
    const e = out.get(key) ?? { size: 0, count: 0 };
    e.size += nodes[i + s];
    e.count++;
    out.set(key, e);
  }
  return out;
}

async function serve(kind: string): Promise<{ port: number; stop: () => Promise<void> }> {
  if (kind === "net" || kind === "conn") {
    const server = net.createServer((s) => {
      s.on("error", () => {});
      const v = Deno.env.get("PROBE_NET_VARIANT") ?? "";
      if (v.includes("nodelay")) s.setNoDelay(true);
      if (v.includes("data")) s.on("data", () => {});
      if (kind === "net") return s.write("220 probe\r\n", v.includes("cb") ? () => {} : undefined);
      // The connection type alone: a 220, then one pending read.
      const c = new Conn(s);
      c.write("220 probe\r\n").then(() => c.read(300_000)).catch(() => {}).finally(() => c.close());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    return { port, stop: () => new Promise((r) => server.close(() => r())) };
  }
  const dir = await Deno.makeTempDir({ prefix: "probe-idle-" });
  const cfg = parseConfig(
    `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n` +
      `[limits]\nconnections = ${MAX_CONNS + 10}\nconnections_per_ip = ${MAX_CONNS + 10}\n` +
      `[log]\nlevel = "error"\n`,
    "probe",
    { cwd: dir },
  );
  // Log lines as `skiff serve` writes them (one per connection), into /dev/null.
  if (!Deno.env.get("PROBE_NO_LOG")) {
    await setupLogging({ ...cfg.log, level: "info", file: "/dev/null" }, { file: true });
  }
  const spool = new Spool(cfg.spoolDir, {});
  await spool.init();
  const lc = { ...cfg.listeners[0], address: { kind: "tcp" as const, host: "127.0.0.1", port: 0 } };
  const listener = await startSmtpListener(lc, { config: cfg, spool, onQueued: () => {} });
  return {
    port: Number(listener.address.split(":").pop()),
    stop: async () => {
      await listener.close(100);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Opens n idle connections from a child process; resolves once all have their greeting. */
async function openIdle(port: number, n: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--client", String(port), String(n)],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  if (!new TextDecoder().decode(value).includes("ready")) throw new Error("Client failed");
  reader.releaseLock();
  return async () => {
    await child.stdin.close();
    await child.status;
    await child.stdout.cancel();
  };
}

/**
 * The bench's idle run for skiff alone (`bench --only idle` also runs
 * Postfix, 500 processes): a real `skiff serve`, RSS from /proc, no forced GC.
 */
async function serveRun(n: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "probe-idle-serve-" });
  const mta = await Skiff.start({
    dir,
    port: freePort(),
    relayhost: `127.0.0.1:${freePort()}`,
    connections: n + 100,
    // Another checkout to compare with (e.g. an export of main): PROBE_ROOT=/path.
    root: Deno.env.get("PROBE_ROOT"),
  });
  let conns: Deno.TcpConn[] = [];
  try {
    closeAll(await openIdleHere(mta.port, 5, 20_000));
    await sleep(1500);
    const before = memoryOf(processTree(mta.roots()), false);
    conns = await openIdleHere(mta.port, n, 60_000);
    await sleep(1500);
    const after = memoryOf(processTree(mta.roots()), false);
    closeAll(conns);
    conns = [];
    await sleep(3000);
    const closed = memoryOf(processTree(mta.roots()), false);
    console.log(
      `skiff serve, ${n} idle: ${((after.rss - before.rss) / n).toFixed(1)} KiB ` +
        `RSS per connection (before ${before.rss} KiB, idle ${after.rss} KiB, ` +
        `3 s after they closed ${closed.rss} KiB)`,
    );
  } finally {
    closeAll(conns);
    await mta.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

async function main(): Promise<void> {
  if (Deno.args[0] === "--client") return await client(Number(Deno.args[1]), Number(Deno.args[2]));
  const kind = Deno.args[0] ?? "skiff";
  const n = Math.min(Number(Deno.args[1] ?? 500), MAX_CONNS);
  if (kind === "serve") return await serveRun(n);
  const top = Number(Deno.args[2] ?? 15);
  const server = await serve(kind);
  // Warm up: lazily compiled code and first-use caches are not per connection.
  await (await openIdle(server.port, 5))();
  await new Promise((r) => setTimeout(r, 500));
  // RSS first, with no snapshot parsed in between (that alone grows RSS by megabytes).
  gc();
  const m0 = Deno.memoryUsage();
  const s0 = v8.getHeapSpaceStatistics();
  const a0 = allocated();
  let close = await openIdle(server.port, n);
  await new Promise((r) => setTimeout(r, 1000));
  gc();
  const m1 = Deno.memoryUsage();
  const s1 = v8.getHeapSpaceStatistics();
  const a1 = allocated();
  await close();
  await new Promise((r) => setTimeout(r, 1500));
  gc();
  const m2 = Deno.memoryUsage();
  const per = (a: number, b: number) => ((b - a) / n / 1024).toFixed(2);
  console.log(`${kind}, ${n} idle connections; per connection, KiB:`);
  console.log(
    `  rss ${per(m0.rss, m1.rss)}  heapUsed ${per(m0.heapUsed, m1.heapUsed)}  ` +
      `external ${per(m0.external, m1.external)}  allocated ${per(a0, a1)}`,
  );
  const spaces = s1.map((x, i) =>
    `${x.space_name.replace("_space", "")} ${per(s0[i].physical_space_size, x.physical_space_size)}`
  );
  console.log(`  V8 spaces, physical: ${spaces.join("  ")}`);
  console.log(
    `  after they closed: rss ${((m2.rss - m0.rss) / 1024).toFixed(0)} KiB above ` +
      `before, heapUsed ${((m2.heapUsed - m0.heapUsed) / 1024).toFixed(0)} KiB`,
  );
  // Then the heap by kind, from two snapshots around a second batch.
  const h0 = heapByKind();
  close = await openIdle(server.port, n);
  await new Promise((r) => setTimeout(r, 1000));
  const h1 = heapByKind();
  const rows = [...h1].map(([k, v]) => {
    const b = h0.get(k) ?? { size: 0, count: 0 };
    return { k, bytes: (v.size - b.size) / n, count: (v.count - b.count) / n };
  }).sort((a, b) => b.bytes - a.bytes);
  const total = rows.reduce((t, r) => t + r.bytes, 0);
  console.log(`  heap by kind, bytes (objects) per connection; total ${total.toFixed(0)}:`);
  for (const r of rows.slice(0, top)) {
    console.log(`    ${r.bytes.toFixed(0).padStart(6)} (${r.count.toFixed(1)})  ${r.k}`);
  }
  await close();
  await server.stop();
}

await main();

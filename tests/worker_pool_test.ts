/**
 * Long-lived local-delivery workers (lib/worker/pool.ts): one process serves
 * many jobs of one key (uid, gid, run permission, log settings) and never a
 * job of another key; a process that fails in the middle of its life is
 * killed and dropped, its job rejected with the cause, and the next job gets
 * a fresh process; content never leaks from one job into the next; reload
 * retires processes and SIGTERM closes them all. As root, two real users'
 * mail is delivered by two processes, each as its user.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/load.ts";
import type { Config } from "../lib/config/types.ts";
import { newQueueId } from "../lib/spool/queue_id.ts";
import { Spool } from "../lib/spool/spool.ts";
import { WorkerError, WorkerPool } from "../lib/worker/pool.ts";
import type { JobTarget } from "../lib/worker/protocol.ts";
import { maildirFiles, SkiffServer, submitMessage, waitFor } from "./harness.ts";
import { runCommand } from "./run_cmd.ts";
import { readableDenoDir } from "./shim_helpers.ts";

const ROOT = Deno.uid() === 0;
const encoder = new TextEncoder();

/**
 * A fake pooled worker speaking the real framing: it reads each job line and
 * exactly `size` content bytes and answers a valid report (each recipient
 * deferred, with its pid in the text), until the content names a fault.
 */
const FAKE = `
const reader = Deno.stdin.readable.getReader();
let buf = new Uint8Array(0);
async function more() {
  const { value, done } = await reader.read();
  if (done) Deno.exit(0);
  const n = new Uint8Array(buf.length + value.length);
  n.set(buf);
  n.set(value, buf.length);
  buf = n;
}
const say = (v) => console.log(typeof v === "string" ? v : JSON.stringify(v));
while (true) {
  let nl;
  while ((nl = buf.indexOf(10)) < 0) await more();
  const job = JSON.parse(new TextDecoder().decode(buf.subarray(0, nl)));
  buf = buf.subarray(nl + 1);
  while (buf.length < job.size) await more();
  const content = new TextDecoder().decode(buf.subarray(0, job.size));
  buf = buf.subarray(job.size);
  const results = job.targets.map((t) => ({ rcpt: t.rcpt, outcome: "deferred", dsn: "4.0.0",
    text: "pid " + Deno.pid + " got " + content.length + " bytes" }));
  const fault = /FAULT=(\\w+)/.exec(content)?.[1];
  if (fault === "crash") Deno.kill(Deno.pid, "SIGKILL");
  if (fault === "exit") Deno.exit(3);
  if (fault === "hang") await new Promise(() => setInterval(() => {}, 1000));
  if (fault === "slow") await new Promise((r) => setTimeout(r, 6000));
  if (fault === "garbage") say("this is not json");
  else if (fault === "wrongFile") say({ file: "ZZZZ", seq: job.seq, results });
  else if (fault === "staleReport") say({ file: job.file, seq: job.seq - 1, results });
  else if (fault === "flood") say("x".repeat(200000));
  else say({ file: job.file, seq: job.seq, results });
}
`;

/** Each fault, the error it must give, and the job deadline it runs under. */
const FAULTS: Record<string, { error: RegExp; timeoutMs?: number }> = {
  crash: { error: /signal SIGKILL/ },
  exit: { error: /exit code 3/ },
  hang: { error: /timed out/, timeoutMs: 1500 },
  garbage: { error: /not JSON/ },
  wrongFile: { error: /reported on/ },
  staleReport: { error: /answered job \d+, expected job \d+/ },
  flood: { error: /more than/ },
};

function fakePool(opts: { timeoutMs?: number; perKey?: number; maxUse?: number; idleMs?: number }) {
  return new WorkerPool({
    timeoutMs: () => opts.timeoutMs ?? 60_000,
    perKey: () => opts.perKey ?? 1,
    total: () => 4,
    maxUse: opts.maxUse,
    idleMs: opts.idleMs,
    command: { command: Deno.execPath(), args: ["eval", FAKE] },
  });
}

const cfg: Config = parseConfig(`spool_dir = "/nonexistent"\n`, "test.toml");

function target(kind: "maildir" | "pipe" = "maildir"): JobTarget {
  return {
    rcpt: 0,
    address: "dave@localhost",
    user: "dave",
    destination: kind === "pipe"
      ? { kind: "pipe", command: ["/bin/true"], user: null }
      : { kind: "maildir", path: "/nonexistent", user: null },
  } as JobTarget;
}

/** Runs one fake job; the pid of the process that served it. */
async function fakeJob(
  pool: WorkerPool,
  text: string,
  opts: { kind?: "maildir" | "pipe"; uid?: number; level?: "info" | "debug" } = {},
): Promise<number> {
  const bytes = encoder.encode(text);
  const report = await pool.run({
    v: 2,
    file: newQueueId(),
    hostname: "localhost",
    sender: "a@localhost",
    size: bytes.length,
    targets: [target(opts.kind)],
    log: { ...cfg.log, level: opts.level ?? cfg.log.level },
  }, {
    content: () => Promise.resolve(ReadableStream.from([bytes])),
    user: opts.uid === undefined ? null : { name: "x", uid: opts.uid, gid: opts.uid },
  });
  const m = /^pid (\d+) got (\d+) bytes$/.exec(report.results[0].text);
  assert.ok(m, report.results[0].text);
  assert.equal(Number(m[2]), bytes.length, "the worker got exactly this job's content");
  return Number(m[1]);
}

/**
 * The pipes a process holds that are not its own stdin, stdout or stderr
 * (Deno dups those): a pipe of another worker there would let it write to
 * that worker's jobs or read its reports.
 */
function foreignPipes(pid: number): string[] {
  const target = (fd: string) => {
    try {
      return Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return ""; // closed meanwhile
    }
  };
  const own = new Set(["0", "1", "2"].map(target));
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => target(e.name))
    .filter((t) => t.startsWith("pipe:") && !own.has(t));
}

const gone = (pid: number) => {
  try {
    Deno.statSync(`/proc/${pid}`);
    return false;
  } catch {
    return true;
  }
};

for (const [name, fault] of Object.entries(FAULTS)) {
  Deno.test({
    name:
      `a pooled worker that fails (${name}) after serving jobs is dropped; the next job gets a fresh process`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const pool = fakePool({ timeoutMs: fault.timeoutMs });
      try {
        const first = await fakeJob(pool, "hello");
        assert.equal(await fakeJob(pool, "hello again"), first, "the process is reused");
        await assert.rejects(
          () => fakeJob(pool, `FAULT=${name}`),
          (err: Error) => err instanceof WorkerError && fault.error.test(err.message),
        );
        assert.ok(gone(first), "the failed process was killed and reaped");
        const next = await fakeJob(pool, "hello");
        assert.notEqual(next, first);
        assert.deepEqual(pool.stats, { started: 2, alive: 1 });
      } finally {
        await pool.close();
      }
      assert.equal(pool.stats.alive, 0);
    },
  });
}

Deno.test({
  name: "pooled workers: a process serves one key only (uid, run permission, log settings), " +
    "is closed after max use, when idle, and by close()",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pool = fakePool({ maxUse: 3, perKey: 2 });
    try {
      const a = await fakeJob(pool, "one", { uid: 1001 });
      const b = await fakeJob(pool, "two", { uid: 1002 });
      const p = await fakeJob(pool, "three", { uid: 1001, kind: "pipe" });
      const l = await fakeJob(pool, "four", { uid: 1001, level: "debug" });
      assert.equal(new Set([a, b, p, l]).size, 4, "four keys, four processes");
      for (const pid of [a, b, p, l]) assert.deepEqual(foreignPipes(pid), [], `pipes of ${pid}`);
      assert.equal(await fakeJob(pool, "five", { uid: 1002 }), b);
      assert.equal(await fakeJob(pool, "six", { uid: 1002 }), b);
      // b served three jobs: it is closed, and the next job of its key gets a new process.
      await waitFor(() => gone(b), 10_000, "the used-up process to exit");
      const b2 = await fakeJob(pool, "seven", { uid: 1002 });
      assert.notEqual(b2, b);
      assert.equal(pool.stats.started, 5);
    } finally {
      await pool.close();
    }
    assert.equal(pool.stats.alive, 0);
    const idle = fakePool({ idleMs: 200 });
    const pid = await fakeJob(idle, "x");
    await waitFor(() => idle.stats.alive === 0 && gone(pid), 10_000, "the idle process to close");
    await idle.close();
  },
});

Deno.test({
  name: "pooled workers: several jobs at once for one key run in at most perKey processes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pool = fakePool({ perKey: 2 });
    try {
      const pids = await Promise.all(Array.from({ length: 8 }, (_, i) => fakeJob(pool, `m${i}`)));
      assert.ok(new Set(pids).size <= 2, `pids ${pids}`);
      assert.ok(pool.stats.started <= 2);
    } finally {
      await pool.close();
    }
  },
});

Deno.test({
  name: "pooled workers: a slow first job does not hold back a second process of its key",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pool = fakePool({ perKey: 2 });
    try {
      const slow = fakeJob(pool, "FAULT=slow");
      const quick = await fakeJob(pool, "quick");
      assert.notEqual(quick, await slow, "the quick job got a process of its own");
    } finally {
      await pool.close();
    }
  },
});

/** A spool with messages to dave@localhost, each its own content. */
async function spoolWith(contents: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "skiff-pool-" });
  const c = parseConfig(
    `spool_dir = "${dir}/spool"\n[local]\nmaildir_root = "${dir}/mail"\n`,
    "test.toml",
  );
  const spool = new Spool(c.spoolDir);
  await spool.init();
  const ids: string[] = [];
  for (const text of contents) {
    const w = await spool.begin();
    const bytes = encoder.encode(text);
    await w.write(bytes);
    await w.commit({
      id: w.id,
      from: "a@localhost",
      recipients: [{ address: "dave@localhost" }],
      received: Date.now(),
      client: { address: "127.0.0.1", helo: "t" },
      protocol: "ESMTP",
      size: bytes.length,
    });
    ids.push(w.id);
  }
  return { dir, cfg: c, spool, ids };
}

Deno.test({
  name: "one real worker process delivers several messages, each file holding only its own content",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const big = `Subject: big\r\n\r\n${"A".repeat(100_000)}\r\n`;
    const small = (n: number) => `Subject: small ${n}\r\n\r\nB${n}\r\n`;
    const { dir, cfg: c, spool, ids } = await spoolWith([big, small(1), big, small(2)]);
    const pool = new WorkerPool({ timeoutMs: () => 60_000, perKey: () => 1, total: () => 1 });
    try {
      for (const id of ids) {
        const state = await spool.load(id);
        const report = await pool.run({
          v: 2,
          file: id,
          hostname: "localhost",
          sender: "a@localhost",
          size: state.envelope.size,
          targets: [{
            rcpt: 0,
            address: "dave@localhost",
            user: "dave",
            destination: { kind: "maildir", path: c.local.maildirRoot, user: null },
          }],
          log: c.log,
        }, { content: async () => (await spool.content(id)).stream });
        assert.deepEqual(report.results.map((r) => r.outcome), ["delivered"]);
      }
      assert.deepEqual(pool.stats, { started: 1, alive: 1 }, "one process served all four");
      const texts = await Promise.all(
        (await maildirFiles(`${dir}/mail/dave`)).map((f) => Deno.readTextFile(f)),
      );
      assert.equal(texts.length, 4);
      const smalls = texts.filter((t) => /Subject: small/.test(t));
      assert.equal(smalls.length, 2);
      for (const t of smalls) assert.ok(!t.includes("AAAA"), "no bytes of the big message");
      for (const t of texts.filter((t) => /Subject: big/.test(t))) {
        const body = t.slice(t.indexOf("\n\n") + 2).trimEnd();
        assert.equal(body, "A".repeat(100_000), "the big message whole, nothing else");
      }
    } finally {
      await pool.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The pids of the `skiff worker` lines a server logged. */
function workerStarts(log: string): { pid: number; uid: string }[] {
  return [...log.matchAll(/ worker started pid=(\d+) uid=(\S+)/g)].map((m) => ({
    pid: Number(m[1]),
    uid: m[2],
  }));
}

Deno.test({
  name: "skiff serve: one worker process delivers a burst to one user; SIGHUP retires it, " +
    "SIGTERM closes the pool and leaves no worker behind",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = await SkiffServer.start({
      queue: "retry_min = 1\nretry_max = 4\nworkers = 1",
      env: ROOT ? { DENO_DIR: await readableDenoDir() } : undefined,
    });
    try {
      for (let i = 0; i < 5; i++) {
        await submitMessage(server.port, { to: "dave@localhost", subject: `burst ${i}` });
      }
      await waitFor(
        async () => (await maildirFiles(`${server.dir}/mail/dave`)).length === 5,
        60_000,
        "five deliveries",
      );
      const starts = workerStarts(server.log);
      assert.equal(starts.length, 1, `one worker process for five messages:\n${server.log}`);
      const first = starts[0].pid;
      assert.ok(!gone(first), "the worker stays for the next message");
      server.kill("SIGHUP");
      await waitFor(() => gone(first), 20_000, "reload to retire the worker");
      await submitMessage(server.port, { to: "dave@localhost", subject: "after reload" });
      await waitFor(
        async () => (await maildirFiles(`${server.dir}/mail/dave`)).length === 6,
        60_000,
        "the delivery after the reload",
      );
      const again = workerStarts(server.log);
      assert.equal(again.length, 2, "a new worker after the reload");
      const status = await server.stop();
      assert.equal(status.code, 0);
      assert.ok(gone(again[1].pid), "SIGTERM closed the worker");
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

/** Creates a user skpool<tag><random> with a home; returns its ids. */
async function makeUser(base: string, tag: string) {
  const rnd = [...crypto.getRandomValues(new Uint8Array(3))].map((b) => b.toString(16)).join("");
  const name = `skpool${tag}${rnd}`.slice(0, 30);
  const home = `${base}/home/${name}`;
  await Deno.mkdir(`${base}/home`, { recursive: true, mode: 0o755 });
  const r = await runCommand(["useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", "-U", name]);
  assert.equal(r.code, 0, `useradd ${name}: ${r.stderr}`);
  const pw = (await Deno.readTextFile("/etc/passwd")).split("\n").find((l) =>
    l.startsWith(`${name}:`)
  )!.split(":");
  await Deno.mkdir(home, { mode: 0o755 });
  await Deno.chown(home, Number(pw[2]), Number(pw[3]));
  return { name, uid: Number(pw[2]), gid: Number(pw[3]) };
}

Deno.test({
  name: "as root, two users' mail is delivered by two worker processes, each only as its user",
  ignore: !ROOT,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const base = await Deno.makeTempDir({ prefix: "skiff-pool-root-" });
    await Deno.chmod(base, 0o755);
    const users = [await makeUser(base, "a"), await makeUser(base, "b")];
    let server: SkiffServer | null = null;
    try {
      await Deno.mkdir(`${base}/mail`, { mode: 0o1777 });
      await Deno.chmod(`${base}/mail`, 0o1777);
      server = await SkiffServer.start({
        dir: base,
        queue: "retry_min = 1\nretry_max = 4\nworkers = 1",
        toml: "[delivery]\nlocal_users = true\n",
        env: { DENO_DIR: await readableDenoDir() },
      });
      for (let i = 0; i < 6; i++) {
        const u = users[i % 2];
        await submitMessage(server.port, { to: `${u.name}@localhost`, subject: `m${i}` });
      }
      for (const u of users) {
        const files = await waitFor(
          async () => {
            const f = await maildirFiles(`${base}/mail/${u.name}`);
            return f.length === 3 ? f : null;
          },
          60_000,
          `three messages for ${u.name}`,
        );
        for (const f of files) {
          assert.equal((await Deno.stat(f)).uid, u.uid, `${f} written as ${u.name}`);
        }
      }
      const starts = workerStarts(server.log);
      assert.deepEqual(
        starts.map((s) => s.uid).sort(),
        users.map((u) => String(u.uid)).sort(),
        `one worker process per user:\n${server.log}`,
      );
      for (const s of starts) {
        const status = await Deno.readTextFile(`/proc/${s.pid}/status`);
        const uids = /^Uid:\s*(.*)$/m.exec(status)![1].trim().split(/\s+/);
        assert.deepEqual(uids, [s.uid, s.uid, s.uid, s.uid], `worker ${s.pid} runs as ${s.uid}`);
        assert.deepEqual(foreignPipes(s.pid), [], `worker ${s.pid} holds no other worker's pipe`);
      }
      await server.stop();
      for (const s of starts) assert.ok(gone(s.pid), `worker ${s.pid} closed at SIGTERM`);
    } finally {
      await server?.stop();
      for (const u of users) await runCommand(["userdel", u.name]);
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});

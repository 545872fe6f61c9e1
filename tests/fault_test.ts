/**
 * Faults with real processes (docs/reliability.md, "Crash torture and
 * faults"): a worker child killed mid-delivery, a worker that hangs, a
 * receiving server that drops the connection in the middle of DATA and one
 * that accepts the connection but never answers. In each case the recipient
 * is deferred, retried and delivered exactly once, nothing is lost, and the
 * manager keeps greeting new SMTP sessions while the fault is in progress.
 */
import assert from "node:assert/strict";
import { RawClient, SkiffServer, submitMessage, waitFor } from "./harness.ts";
import { type SinkBehaviour, TOKEN_HEADER, TokenSink } from "../scripts/token_sink.ts";

/** A new SMTP session gets its 220 greeting: the manager's event loop is serving. */
async function greets(port: number): Promise<void> {
  const c = await RawClient.connect(port);
  try {
    const r = await c.reply(5000);
    assert.ok(r && r[0].startsWith("220 "), `expected a 220 greeting, got ${r}`);
  } finally {
    c.close();
  }
}

/**
 * The pipe command: its first run writes its own pid and its parent's (the
 * worker child) to OUT/first and then sleeps; every later run appends the
 * message to OUT/delivered.
 */
const SLOW_ONCE = `#!/usr/bin/python3
import os, sys, time
out = sys.argv[1]
data = sys.stdin.buffer.read()
try:
    fd = os.open(out + "/first", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
except FileExistsError:
    with open(out + "/delivered", "ab") as f:
        f.write(b"--message--\\n" + data)
    sys.exit(0)
os.write(fd, ("%d %d\\n" % (os.getpid(), os.getppid())).encode())
os.close(fd)
time.sleep(30)
`;

/** Runs a skiff whose pipe.test recipients go to SLOW_ONCE; returns its output directory. */
async function slowPipeServer(queue: string) {
  const work = await Deno.makeTempDir({ prefix: "skiff-fault-" });
  // Pipe routes run as delivery.default_privs (nobody), never root: the
  // script must be reachable and its output directory writable by that user.
  await Deno.chmod(work, 0o755);
  const script = `${work}/slow_once.py`;
  await Deno.writeTextFile(script, SLOW_ONCE);
  await Deno.chmod(script, 0o755);
  const out = `${work}/out`;
  await Deno.mkdir(out, { mode: 0o777 });
  await Deno.chmod(out, 0o777);
  const server = await SkiffServer.start({
    dir: work,
    queue,
    toml: `[[route]]\ndomain = "pipe.test"\ntype = "pipe"\ncommand = ${
      JSON.stringify([script, out])
    }\n`,
  });
  return { out, server };
}

/** The pids OUT/first names once the pipe command's first run is under way. */
async function firstRun(work: string): Promise<{ pipe: number; worker: number }> {
  const line = await waitFor(
    async () => {
      const t = await Deno.readTextFile(`${work}/first`).catch(() => "");
      return t.endsWith("\n") ? t : null;
    },
    60_000, // a deadline: a worker starts slowly on a loaded machine
    "the pipe command's first run",
  );
  const [pipe, worker] = line.trim().split(" ").map(Number);
  // The parent is a worker child of skiff, not the manager itself.
  const cmdline = await Deno.readTextFile(`/proc/${worker}/cmdline`);
  assert.match(cmdline, /\0worker/, `pid ${worker} is not a skiff worker: ${cmdline}`);
  return { pipe, worker };
}

/**
 * Signals a process this test learned about, if it is still that process:
 * pids wrap at 32768 on a busy machine, so a pid that exited long ago may
 * now belong to another program (and 0 would signal the test runner's own
 * process group, which once killed the whole suite when firstRun() failed).
 */
function killQuietly(pid: number, signal: Deno.Signal): void {
  if (!(pid > 0)) return;
  try {
    const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    if (!/slow_once\.py|\0worker/.test(cmdline)) return;
    Deno.kill(pid, signal);
  } catch { /* gone */ }
}

/** Waits until the message is delivered and removed, and checks it arrived once. */
async function deliveredOnce(server: SkiffServer, work: string, id: string): Promise<void> {
  await server.waitForLog(new RegExp(`delivered id=${id} `), 30_000);
  await server.waitForLog(new RegExp(`removed id=${id}`), 10_000);
  const got = await Deno.readTextFile(`${work}/delivered`);
  assert.equal(got.split("--message--\n").length - 1, 1, "delivered exactly once");
  assert.match(got, /Subject: fault/);
}

Deno.test({
  name:
    "worker child killed with SIGKILL mid-delivery: recipient deferred, then delivered once; manager keeps serving",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { out, server } = await slowPipeServer("retry_min = 1\nretry_max = 2");
    let pids = { pipe: 0, worker: 0 };
    try {
      const id = await submitMessage(server.port, { to: "box@pipe.test", subject: "fault" });
      pids = await firstRun(out);
      await greets(server.port);
      killQuietly(pids.worker, "SIGKILL");
      await server.waitForLog(new RegExp(`deferred id=${id} [^\\n]*dsn=4\\.3\\.0`), 20_000);
      await greets(server.port);
      await deliveredOnce(server, out, id);
    } finally {
      killQuietly(pids.pipe, "SIGKILL");
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name:
    "hung worker child (SIGSTOP) is killed at worker_timeout: recipient deferred, then delivered once; manager keeps serving",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { out, server } = await slowPipeServer(
      "retry_min = 1\nretry_max = 2\nworker_timeout = 3",
    );
    let pids = { pipe: 0, worker: 0 };
    try {
      const id = await submitMessage(server.port, { to: "box@pipe.test", subject: "fault" });
      pids = await firstRun(out);
      // A stopped process cannot answer, exit or be reaped: the worker is hung.
      killQuietly(pids.worker, "SIGSTOP");
      await greets(server.port);
      await server.waitForLog(new RegExp(`deferred id=${id} [^\\n]*timed out`), 20_000);
      await greets(server.port);
      await deliveredOnce(server, out, id);
    } finally {
      killQuietly(pids.pipe, "SIGKILL");
      killQuietly(pids.worker, "SIGKILL");
      await server.stop();
      await server.cleanup();
    }
  },
});

/** A skiff relaying everything to a TokenSink whose first connection misbehaves. */
async function relayThroughFaultySink(first: SinkBehaviour, relayToml = "") {
  const work = await Deno.makeTempDir({ prefix: "skiff-fault-" });
  const sink = await TokenSink.start({
    file: `${work}/tokens`,
    behaviour: (n) => n === 1 ? first : "ok",
  });
  const server = await SkiffServer.start({
    dir: work,
    toml: `[relay]\nrelayhost = "127.0.0.1:${sink.port}"\n${relayToml}`,
  });
  return { work, sink, server };
}

/** Submits one message carrying `token`; returns its queue id. */
function submitToken(port: number, token: string): Promise<string> {
  return submitMessage(port, {
    to: "far@example.com",
    data: `Subject: fault\r\n${TOKEN_HEADER}: ${token}\r\n\r\n${"x".repeat(200_000)}\r\n`,
  });
}

Deno.test({
  name:
    "receiving server drops the connection mid-DATA: recipient deferred, then delivered once; manager keeps serving",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { sink, server } = await relayThroughFaultySink("drop-in-data");
    try {
      const id = await submitToken(server.port, "drop-1");
      await server.waitForLog(new RegExp(`deferred id=${id} `), 20_000);
      await greets(server.port);
      await server.waitForLog(new RegExp(`delivered id=${id} `), 30_000);
      await server.waitForLog(new RegExp(`removed id=${id}`), 10_000);
      assert.deepEqual(await sink.tokens(), ["drop-1"]);
      assert.ok(sink.connections >= 2);
    } finally {
      await server.stop();
      await sink.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name:
    "receiving server that never answers: deferred after reply_timeout, then delivered once; manager keeps serving",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { sink, server } = await relayThroughFaultySink(
      "silent",
      "connect_timeout = 2\nreply_timeout = 2\n",
    );
    try {
      const id = await submitToken(server.port, "silent-1");
      await waitFor(() => sink.connections >= 1, 10_000, "skiff connecting to the sink");
      // The client is waiting for a greeting that never comes.
      await greets(server.port);
      await server.waitForLog(new RegExp(`deferred id=${id} [^\\n]*dsn=4\\.4\\.2`), 20_000);
      await server.waitForLog(new RegExp(`delivered id=${id} `), 30_000);
      await server.waitForLog(new RegExp(`removed id=${id}`), 10_000);
      assert.deepEqual(await sink.tokens(), ["silent-1"]);
    } finally {
      await server.stop();
      await sink.stop();
      await server.cleanup();
    }
  },
});

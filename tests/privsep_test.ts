/**
 * Privilege separation (issue 8, docs/security.md), with real processes and
 * real uids (CI runs as root; these tests need root and are ignored
 * otherwise, with a line saying so): the privileged helper refuses what it
 * must, a manager started as root serves as `user` in every thread with only
 * the helper left at uid 0 while mail flows in (SMTP, maildrop) and out, no child inherits a
 * descriptor, a failing worker's cause reaches the log with the queue id, and
 * a spool with the wrong owner is refused.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/load.ts";
import {
  encodeFrame,
  type Frame,
  jsonFrame,
  jsonPayload,
  readFrames,
  T,
} from "../lib/privsep/frames.ts";
import { unreachableByOthers } from "../lib/privsep/plan.ts";
import {
  maildirFiles,
  runSkiff,
  skiffArgs,
  SkiffServer,
  submitMessage,
  waitFor,
} from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";
import { runCommand } from "./run_cmd.ts";
import { DOVECOT, Dovecot } from "./dovecot.ts";
import { spoolMessage } from "./delivery_peers.ts";
import { PrivHelper } from "../lib/privsep/client.ts";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import {
  descendants,
  inheritableSockets,
  pidListeningOn,
  RECORDER,
  testAccount,
  threadIds,
} from "./privsep_helpers.ts";

const ROOT = Deno.uid() === 0;
const MGR = "skpvmgr";
const RCPT = "skpvrcpt";
if (!ROOT) console.error("privsep tests need root (CI runs as root): ignored");

/** Environment variables a child may have (lib/sys/child_env.ts, lib/deliver/pipe.ts). */
const DOCUMENTED_ENV = new Set([
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "SENDER",
  "RECIPIENT",
  "DOMAIN",
  "EXTENSION",
  "ORIGINAL_RECIPIENT",
  "LOCAL",
  "CLIENT_ADDRESS",
  "CLIENT_HOSTNAME",
  "CLIENT_HELO",
  "CLIENT_PROTOCOL",
  "SASL_METHOD",
  "SASL_USERNAME",
  "QUEUE_ID",
  "LANG",
  "TZ",
  "DENO_DIR",
  "DENO_NO_UPDATE_CHECK",
  "NO_COLOR",
  "LC_CTYPE",
]);

/** A directory every test uid can traverse, holding the recorder program and an open out/. */
async function openTestDir(): Promise<{ dir: string; recorder: string; out: string }> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-privsep-" });
  await Deno.chmod(dir, 0o755);
  const recorder = `${dir}/recorder.py`;
  await Deno.writeTextFile(recorder, RECORDER);
  await Deno.chmod(recorder, 0o755);
  const out = `${dir}/out`;
  await Deno.mkdir(out);
  await Deno.chmod(out, 0o1777);
  await Deno.mkdir(`${dir}/mail`);
  await Deno.chmod(`${dir}/mail`, 0o1777);
  return { dir, recorder, out };
}

/** Fails with an explanation when workers running as other uids could not load skiff. */
function assertLoadableByOthers(): void {
  const problems = unreachableByOthers();
  assert.deepEqual(
    problems,
    [],
    "Run the tests through ./scripts/deno (DENO_DIR in .tools/deno-dir) from a clone every " +
      "user can traverse (not under /root): workers run as other uids and load skiff from there",
  );
}

Deno.test("config: user must be an unprivileged passwd user, and group needs user", () => {
  const bad = (toml: string, re: RegExp) =>
    assert.throws(() => parseConfig(toml, "t.toml", { cwd: "/tmp" }), re);
  bad('user = "skpv-no-such-user"', /key "user": expected a user name in \/etc\/passwd/);
  bad('user = "root"', /key "user": expected an unprivileged user \(not uid 0\)/);
  bad('group = "nogroup"', /key "group": expected "" while user is unset/);
  bad('user = "nobody"\ngroup = "root"', /key "group": expected a group other than gid 0/);
  const c = parseConfig('user = "nobody"', "t.toml", { cwd: "/tmp" });
  assert.equal(c.user?.uid, 65534);
  assert.equal(parseConfig("", "t.toml", { cwd: "/tmp" }).user, null);
});

Deno.test("check-config and status warn when user is unset", async () => {
  const cc = await runSkiff(["check-config"]);
  assert.equal(cc.code, 0);
  assert.match(cc.stderr, /warning: no "user" is set/);
  const dir = await Deno.makeTempDir({ prefix: "skiff-privsep-" });
  try {
    await Deno.writeTextFile(`${dir}/s.toml`, `spool_dir = "${dir}/spool"\n`);
    const st = await runSkiff(["--config", `${dir}/s.toml`, "status"]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /warning: no "user" is set/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Talks frames to a `skiff privhelper` process. */
class HelperPeer {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #frames: AsyncGenerator<Frame>;
  constructor(configPath: string) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: skiffArgs(["--config", configPath, "privhelper"]),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#frames = readFrames(this.#child.stdout);
  }
  send(frame: Uint8Array): Promise<void> {
    return this.#writer.write(frame);
  }
  async next(): Promise<Frame> {
    const r = await this.#frames.next();
    if (r.done) throw new Error("Helper closed its stdout");
    return r.value;
  }
  async status(): Promise<Deno.CommandStatus> {
    await this.#writer.close().catch(() => {});
    return await this.#child.status;
  }
  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

Deno.test({
  name: "privhelper refuses uid 0, a uid not matching its name, programs not in its config and " +
    "workers as users the config does not deliver as; " +
    "runs a configured program as its user with only fds 0-2 and the documented environment",
  ignore: !ROOT,
  fn: async () => {
    const mgr = await testAccount(MGR);
    const rcpt = await testAccount(RCPT);
    const { dir, recorder } = await openTestDir();
    const cfg = `${dir}/skiff.toml`;
    await Deno.writeTextFile(
      cfg,
      `user = "${MGR}"\nspool_dir = "${dir}/spool"\n[[route]]\ndomain = "prog.test"\n` +
        `type = "program"\ncommand = ["/usr/bin/python3", "${recorder}"]\n`,
    );
    const h = new HelperPeer(cfg);
    try {
      assert.equal((await h.next()).type, T.READY);
      const refused = async (ch: number, req: unknown, re: RegExp) => {
        await h.send(jsonFrame(T.SPAWN, ch, req));
        const f = await h.next();
        assert.equal(f.type, T.REFUSED, `channel ${ch} must be refused`);
        assert.equal(f.channel, ch);
        assert.match(String(jsonPayload(f).error), re);
      };
      const prog = ["/usr/bin/python3", recorder];
      await refused(1, { kind: "worker", user: { name: "root", uid: 0, gid: 0 } }, /never 0/);
      await refused(
        2,
        { kind: "program", argv: prog, user: { name: "root", uid: 0, gid: 0 } },
        /never 0/,
      );
      await refused(
        3,
        { kind: "worker", user: { name: MGR, uid: rcpt.uid, gid: rcpt.gid } },
        /has uid/,
      );
      await refused(
        4,
        { kind: "program", argv: ["/bin/sh", "-c", "id"], user: { name: MGR, ...mgr } },
        /not a program route/,
      );
      await refused(
        5,
        { kind: "program", argv: prog, user: { name: RCPT, ...rcpt } },
        /not a program route/,
      );
      await refused(
        6,
        { kind: "worker", argv: ["/bin/sh"], user: { name: MGR, ...mgr } },
        /no argv/,
      );
      await refused(8, { kind: "worker", user: { name: RCPT, ...rcpt } }, /do not run as skpvrcpt/);
      // The configured program, as the route's user (here: `user`, the route names none).
      await h.send(
        jsonFrame(T.SPAWN, 7, { kind: "program", argv: prog, user: { name: MGR, ...mgr } }),
      );
      assert.equal((await h.next()).type, T.SPAWNED);
      await h.send(encodeFrame(T.STDIN, 7, new TextEncoder().encode("hello\n")));
      assert.equal((await h.next()).type, T.STDIN_ACK);
      await h.send(encodeFrame(T.STDIN_EOF, 7, new Uint8Array(0)));
      let out = "";
      let exit: Record<string, unknown> | null = null;
      while (!exit) {
        const f = await h.next();
        if (f.type === T.STDOUT) out += new TextDecoder().decode(f.payload);
        if (f.type === T.EXIT) exit = jsonPayload(f);
      }
      assert.equal(exit.code, 0);
      assert.match(String(exit.stderr), /recorder ran/, "stderr comes back with the status");
      const rec = JSON.parse(out);
      assert.equal(rec.uid, mgr.uid);
      assert.equal(rec.gid, mgr.gid);
      assert.deepEqual(rec.groups, [], "no supplementary groups");
      assert.deepEqual(rec.fds, [0, 1, 2], "only stdin, stdout and stderr");
      assert.equal(rec.stdin, 6);
      assert.equal(rec.cwd, "/", "home /nonexistent does not exist: cwd is /");
      for (const k of rec.env) assert.ok(DOCUMENTED_ENV.has(k), `undocumented variable ${k}`);
      // A frame with an impossible length is a protocol error: the helper stops.
      await h.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1]));
      assert.equal((await h.status()).code, 1);
    } finally {
      h.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

peerTest(
  "started as root with user set: the listener's process runs as user in every thread, only " +
    "the privhelper keeps uid 0, the spool is user's, mail flows in (SMTP, maildrop) and out, no child inherits " +
    "a descriptor",
  [PEERS.smtpSink, PEERS.python3],
  async () => {
    if (!ROOT) return console.error("needs root: skipped");
    assertLoadableByOthers();
    const mgr = await testAccount(MGR);
    const rcpt = await testAccount(RCPT);
    const { dir, recorder, out } = await openTestDir();
    const sink = await Sink.start();
    const server = await SkiffServer.start({
      dir,
      top: `user = "${MGR}"`,
      toml: `[delivery]\nlocal_users = true\n` +
        `[[route]]\ndomain = "remote.test"\ntype = "smtp"\nhost = "127.0.0.1:${sink.port}"\n` +
        `tls = "none"\n` +
        `[[route]]\ndomain = "pipe.test"\ntype = "pipe"\n` +
        `command = ["/usr/bin/python3", "${recorder}", "${out}/pipe.json"]\n`,
    });
    try {
      // The process holding the TCP listener is the manager, and it runs as skpvmgr throughout.
      const pid = await pidListeningOn(server.port);
      assert.equal(pid, server.pid);
      const threads = threadIds(pid);
      assert.ok(threads.length > 1, "Deno runs several threads");
      for (const t of threads) {
        assert.deepEqual(t.uid, [mgr.uid, mgr.uid, mgr.uid, mgr.uid], `thread ${t.tid} uid`);
        assert.deepEqual(t.gid, [mgr.gid, mgr.gid, mgr.gid, mgr.gid], `thread ${t.tid} gid`);
        assert.deepEqual(t.groups, [mgr.gid], `thread ${t.tid} groups`);
      }
      const root = descendants(pid).filter((d) => d.uid === 0);
      assert.equal(root.length, 1, `one process at uid 0: ${JSON.stringify(root)}`);
      assert.match(root[0].cmd, / privhelper/);
      assert.deepEqual(inheritableSockets(pid), [], "every socket of the manager is close-on-exec");
      for (const p of ["spool", "spool/queue", "spool/incoming", "spool/lock", "var/maildrop"]) {
        assert.equal((await Deno.stat(`${dir}/${p}`)).uid, mgr.uid, `${p} is owned by ${MGR}`);
      }
      // In over SMTP, out to a Maildir as the local user, to a relay, and to a pipe.
      const local = await submitMessage(server.port, { to: `${RCPT}@localhost`, subject: "local" });
      await submitMessage(server.port, { to: "far@remote.test", subject: "relayed" });
      await submitMessage(server.port, { to: "p@pipe.test", subject: "piped" });
      const files = await waitFor(async () => {
        const f = await maildirFiles(`${dir}/mail/${RCPT}`);
        return f.length > 0 ? f : null;
      });
      assert.equal((await Deno.stat(files[0])).uid, rcpt.uid, "Maildir file written as the user");
      await server.waitForLog(new RegExp(`delivered id=${local} .*relay=local`));
      await waitFor(async () =>
        (await sink.messages()).some((m) => m.includes("Subject: relayed"))
      );
      const rec = await waitFor(() =>
        Deno.readTextFile(`${out}/pipe.json`).then(JSON.parse).catch(() => null)
      );
      assert.notEqual(rec.uid, 0, "the pipe ran as an unprivileged user");
      assert.deepEqual(rec.fds, [0, 1, 2], "the pipe inherited only stdin, stdout, stderr");
      for (const k of rec.env) assert.ok(DOCUMENTED_ENV.has(k), `undocumented variable ${k}`);
      assert.ok(Array.isArray(rec.parent_env), `parent's environment: ${rec.parent_env}`);
      for (const k of rec.parent_env) {
        assert.ok(DOCUMENTED_ENV.has(k), `undocumented variable ${k} in the worker's environment`);
      }
      // The maildrop: a user's drop (no submission socket here) is read by the manager as user.
      const drop = await runCommand([
        "/usr/bin/setpriv",
        `--reuid=${rcpt.uid}`,
        `--regid=${rcpt.gid}`,
        "--clear-groups",
        "--",
        Deno.execPath(),
        ...skiffArgs(["--config", server.configPath, "sendmail", "-i", `${RCPT}@localhost`]),
      ], { cwd: dir, stdin: "Subject: dropped\n\nvia the maildrop\n" });
      assert.equal(drop.code, 0, drop.stderr);
      await waitFor(async () => (await maildirFiles(`${dir}/mail/${RCPT}`)).length === 2);
      const queued = [...Deno.readDirSync(`${dir}/spool/queue`)];
      for (const q of queued) {
        assert.equal((await Deno.stat(`${dir}/spool/queue/${q.name}`)).uid, mgr.uid);
      }
    } finally {
      await server.stop();
      await sink.stop();
      await server.cleanup();
    }
  },
);

Deno.test({
  name:
    "a worker that cannot load skiff logs its cause with the queue id, and the deferral says why",
  ignore: !ROOT,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await testAccount(MGR);
    await testAccount(RCPT);
    const { dir } = await openTestDir();
    // Finding 6: a module cache only root can read, as /root/.cache/deno is.
    const src = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
    const closed = `${dir}/deno-dir`;
    const cp = await new Deno.Command("/bin/cp", { args: ["-r", src, closed] }).output();
    assert.ok(cp.success, `copy ${src}`);
    await Deno.chmod(closed, 0o700);
    const server = await SkiffServer.start({
      dir,
      top: `user = "${MGR}"`,
      toml: `[delivery]\nlocal_users = true\n`,
      env: { DENO_DIR: closed },
    });
    try {
      await server.waitForLog(/workers running as other users cannot load skiff .*DENO_DIR/);
      const id = await submitMessage(server.port, { to: `${RCPT}@localhost` });
      const line = (await server.waitForLog(new RegExp(`worker failed id=${id} .*`), 60_000))[0];
      assert.match(line, /error="?Worker failed with exit code \d+/);
      assert.match(
        line,
        /stderr=".*(npm package|ermission denied|os error 13|cached-only)/i,
        "the child's own words",
      );
      const deferred = (await server.waitForLog(new RegExp(`deferred id=${id} .*`)))[0];
      assert.match(deferred, /Local delivery failed: Worker failed with exit code \d+: /);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "a spool owned by someone else than user is refused, naming path, owner and mode",
  ignore: !ROOT,
  fn: async () => {
    const mgr = await testAccount(MGR);
    const dir = await Deno.makeTempDir({ prefix: "skiff-privsep-" });
    try {
      await Deno.mkdir(`${dir}/spool`, { mode: 0o755 });
      await Deno.chmod(`${dir}/spool`, 0o755);
      await Deno.writeTextFile(
        `${dir}/s.toml`,
        `user = "${MGR}"\nspool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n`,
      );
      const r = await runSkiff(["--config", `${dir}/s.toml`, "serve"]);
      assert.equal(r.code, 78, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `${dir}/spool is owned by uid 0 with mode 0755; expected owner ${MGR} \\(uid ${mgr.uid}\\) and mode 0700`,
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Runs skiff as another uid (setpriv), from /tmp. */
function runSkiffAs(uid: number, gid: number, args: string[], stdin?: string) {
  return runCommand([
    "/usr/bin/setpriv",
    `--reuid=${uid}`,
    `--regid=${gid}`,
    "--clear-groups",
    "--",
    Deno.execPath(),
    ...skiffArgs(args),
  ], { cwd: "/tmp", stdin });
}

Deno.test({
  name: "serve started by another user than user is refused, naming both",
  ignore: !ROOT,
  fn: async () => {
    assertLoadableByOthers();
    await testAccount(MGR);
    const rcpt = await testAccount(RCPT);
    const { dir } = await openTestDir();
    try {
      await Deno.writeTextFile(
        `${dir}/s.toml`,
        `user = "${MGR}"\nspool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n`,
      );
      const r = await runSkiffAs(rcpt.uid, rcpt.gid, ["--config", `${dir}/s.toml`, "serve"]);
      assert.equal(r.code, 78, r.stderr);
      assert.match(r.stderr, new RegExp(`user = "${MGR}".*started as ${RCPT}`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a root skiff flush with user set runs its queue pass as user: queue files stay user's",
  ignore: !ROOT,
  fn: async () => {
    assertLoadableByOthers();
    const mgr = await testAccount(MGR);
    const { dir } = await openTestDir();
    try {
      const cfg = `${dir}/s.toml`;
      await Deno.writeTextFile(
        cfg,
        `user = "${MGR}"\nspool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n` +
          `[sendmail]\nmaildrop_dir = "${dir}/maildrop"\n` +
          `[delivery]\nnameserver = "127.0.0.1:1"\ndns_timeout = 1\n`,
      );
      const first = await runSkiff(["--config", cfg, "flush"]);
      assert.equal(first.code, 0, first.stderr);
      const drop = await runSkiffAs(65534, 65534, [
        "--config",
        cfg,
        "sendmail",
        "-i",
        "someone@far.example",
      ], "Subject: later\n\nstays queued\n");
      assert.equal(drop.code, 0, drop.stderr);
      const second = await runSkiff(["--config", cfg, "flush"]);
      assert.equal(second.code, 75, second.stdout + second.stderr); // deferred: DNS is down
      const queued = [...Deno.readDirSync(`${dir}/spool/queue`)];
      assert.equal(queued.length, 1);
      assert.equal((await Deno.stat(`${dir}/spool/queue/${queued[0].name}`)).uid, mgr.uid);
      assert.equal((await Deno.stat(`${dir}/spool/lock`)).uid, mgr.uid);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

peerTest(
  "a program destination with a user is started by the privhelper as that user, " +
    "and its LMTP session runs over the helper's pipes",
  [PEERS.dovecotLmtp, { bin: DOVECOT, pkg: "dovecot-core" }],
  async () => {
    if (!ROOT) return console.error("needs root: skipped");
    assertLoadableByOthers();
    await testAccount(MGR);
    const dc = await Dovecot.start();
    const dir = await Deno.makeTempDir({ prefix: "skiff-privsep-" });
    const path = `${dir}/skiff.toml`;
    const text = `user = "${MGR}"\nhostname = "skiff.test"\nspool_dir = "${dir}/spool"\n` +
      `[delivery]\nnameserver = "127.0.0.1:1"\ncache_idle = 60\n` +
      `[[route]]\ndomain = "asnobody.test"\ntype = "program"\nuser = "nobody"\n` +
      `command = ${JSON.stringify(dc.lmtpCommand)}\n`;
    await Deno.writeTextFile(path, text);
    const cfg = parseConfig(text, path); // the helper loads the same file itself
    const spool = new Spool(cfg.spoolDir);
    await spool.init();
    const helper = await PrivHelper.start(cfg);
    const m = new QueueManager({ config: cfg, spool, spawner: helper });
    try {
      for (let i = 0; i < 2; i++) {
        const id = await spoolMessage(spool, {
          from: "alice@localhost",
          to: ["kim@asnobody.test"],
        });
        m.enqueue(id);
        await m.idle();
      }
      assert.deepEqual(await spool.list(), [], "both delivered");
      assert.equal((await dc.messages("kim")).length, 2);
      const nobody = { name: "nobody", uid: 65534, gid: 65534 };
      assert.equal(m.programPool.starts(dc.lmtpCommand, nobody), 1, "one program, kept running");
      const pid = m.programPool.pid(dc.lmtpCommand, nobody)!;
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      assert.match(status, /^Uid:\t65534\t65534\t65534\t65534$/m);
      assert.match(status, /^PPid:\t(\d+)$/m);
      assert.equal(Number(/^PPid:\t(\d+)$/m.exec(status)![1]), helper.pid, "started by the helper");
    } finally {
      await m.stop();
      await helper.close();
      await dc.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

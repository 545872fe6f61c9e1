/**
 * Local delivery through a real `skiff serve` (the queue manager, its worker
 * children, the journal and the bounces): a pipe command run from an argv
 * list (exit 0 delivered, 75 deferred, 1 bounced with its stderr in the
 * DSN; as nobody when skiff is root), mbox files (the "From " line, ">From"
 * quoting, two deliveries appended, a stale dotlock broken, a live one
 * waited out), the aliases file compiled by `skiff newaliases` (another
 * name, a list, |command, /file, :include:, a loop failing with 5.4.6), and
 * a hostile SMTP server that cannot crash the manager or lose the message.
 * Every wait is for a log line or a file, never a fixed sleep.
 */
import assert from "node:assert/strict";
import { maildirFiles, runSkiff, SkiffServer, submitMessage, waitFor } from "./harness.ts";
import { readableDenoDir } from "./shim_helpers.ts";
import { Spool } from "../lib/spool/spool.ts";

const submit = (port: number, from: string, to: string[], data: string) =>
  submitMessage(port, { from, to, data });

const ROOT = Deno.uid() === 0;

/** A directory every user can reach (nobody's workers write there). */
async function openDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.chmod(dir, 0o777);
  return dir;
}

/** Server options that let workers run as nobody under `deno run` when we are root. */
async function nobodyEnv(): Promise<Record<string, string>> {
  return ROOT ? { DENO_DIR: await readableDenoDir() } : {};
}

/**
 * The pipe command: records its argv, ids and environment in OUT/<local>.json
 * and the message in OUT/<local>.msg; "tmp..." exits 75, "bad..." exits 1.
 */
const PIPE_SCRIPT = `#!/usr/bin/python3
import json, os, sys
out, rcpt = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read()
local = rcpt.split("@")[0].strip('"')
if local.startswith("tmp"):
    print("mailbox busy, come back later", file=sys.stderr)
    sys.exit(75)
if local.startswith("bad"):
    print("no such mailbox: " + local, file=sys.stderr)
    sys.exit(1)
name = "".join(ch if ch.isalnum() else "_" for ch in local)
keys = ["SENDER", "RECIPIENT", "USER", "DOMAIN", "HOME", "LOGNAME", "LOCAL"]
rec = {"argv": sys.argv[1:], "uid": os.getuid(), "gid": os.getgid(),
       "env": {k: os.environ.get(k) for k in keys}}
with open(os.path.join(out, name + ".msg"), "wb") as f:
    f.write(data)
with open(os.path.join(out, name + ".json.tmp"), "w") as f:
    json.dump(rec, f)
os.rename(os.path.join(out, name + ".json.tmp"), os.path.join(out, name + ".json"))
`;

async function writeScript(dir: string): Promise<string> {
  const path = `${dir}/record.py`;
  await Deno.writeTextFile(path, PIPE_SCRIPT);
  await Deno.chmod(path, 0o755);
  return path;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return await waitFor(
    async () => {
      try {
        return JSON.parse(await Deno.readTextFile(path));
      } catch {
        return null;
      }
    },
    20_000,
    path,
  );
}

async function mailTexts(dir: string): Promise<string[]> {
  return await Promise.all((await maildirFiles(dir)).map((f) => Deno.readTextFile(f)));
}

Deno.test({
  name: "pipe through skiff serve: argv without a shell, exit 0 / 75 / 1, stderr in the bounce",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skiff-pipe-");
    const out = `${work}/out`;
    await Deno.mkdir(out, { mode: 0o777 });
    await Deno.chmod(out, 0o777);
    const script = await writeScript(work);
    const command = [script, out, "{recipient}", "{sender}", "{user}", "{domain}"];
    const server = await SkiffServer.start({
      dir: work,
      env: await nobodyEnv(),
      toml: `[[route]]\ndomain = "pipe.test"\ntype = "pipe"\ncommand = ${
        JSON.stringify(command)
      }\nuser = "nobody"\n`,
    });
    try {
      const evil = `"ok $(touch ${out}/pwned); x"@pipe.test`;
      const id = await submit(
        server.port,
        "alice@localhost",
        ["ok@pipe.test", "tmp@pipe.test", "bad@pipe.test", evil],
        "Subject: piped\r\n\r\n.dot line\r\nbody\r\n",
      );
      await server.waitForLog(new RegExp(`delivered id=${id} to=<ok@pipe\\.test> relay=local`));
      await server.waitForLog(
        new RegExp(`deferred id=${id} to=<tmp@pipe\\.test>[^\\n]*dsn=4\\.3\\.0[^\\n]*status 75`),
      );
      await server.waitForLog(
        new RegExp(`failed id=${id} to=<bad@pipe\\.test>[^\\n]*dsn=5\\.3\\.0 status=bounced`),
      );

      const rec = await readJson(`${out}/ok.json`);
      assert.deepEqual(rec.argv, [out, "ok@pipe.test", "alice@localhost", "ok", "pipe.test"]);
      assert.deepEqual(rec.env, {
        SENDER: "alice@localhost",
        RECIPIENT: "ok@pipe.test",
        USER: "ok",
        LOGNAME: "ok",
        LOCAL: "ok",
        DOMAIN: "pipe.test",
        HOME: ROOT ? "/nonexistent" : (Deno.env.get("HOME") ?? "/"),
      });
      if (ROOT) {
        assert.equal(rec.uid, 65534, "run as nobody");
        assert.equal(rec.gid, 65534, "with nobody's group");
      } else {
        assert.equal(rec.uid, Deno.uid());
      }
      // The message on stdin with LF line endings, dots as they were.
      const msg = await Deno.readTextFile(`${out}/ok.msg`);
      assert.match(msg, /\nSubject: piped\n\n\.dot line\nbody\n$/);

      // The quoted local part is one argument, never shell text.
      await server.waitForLog(new RegExp(`delivered id=${id} to="<\\\\"ok [^\\n]*relay=local`));
      const evilName = evil.split("@")[0].replaceAll('"', "").replace(/[^A-Za-z0-9]/g, "_");
      const evilRec = await readJson(`${out}/${evilName}.json`);
      assert.equal((evilRec.argv as string[])[1], evil);
      const files = [...Deno.readDirSync(out)].map((e) => e.name);
      assert.ok(!files.includes("pwned"), `no shell ran: ${files}`);

      // The bounce for bad@ carries the command's stderr.
      const bounces = await waitFor(
        async () => {
          const t = await mailTexts(`${work}/mail/alice`);
          return t.length > 0 ? t : null;
        },
        20_000,
        "the bounce",
      );
      assert.equal(bounces.length, 1);
      assert.match(
        bounces[0],
        /Final-Recipient: rfc822; bad@pipe\.test\nAction: failed\nStatus: 5\.3\.0/,
      );
      assert.match(bounces[0], /Diagnostic-Code: [^\n]*exited with status 1: no such mailbox: bad/);
      assert.doesNotMatch(bounces[0], /Final-Recipient: rfc822; tmp@/);
      assert.ok(!server.log.includes(`removed id=${id}`), "tmp@ still queued");
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "mbox through skiff serve: From line, >From quoting, appended, stale and live dotlocks",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = await SkiffServer.start({
      toml: `[delivery]\nlocal_mailbox = "mbox"\nmbox_dir = "MBOX"\n`.replace(
        "MBOX",
        "./mbox",
      ),
    });
    const box = `${server.dir}/mbox/carol`;
    try {
      await Deno.mkdir(`${server.dir}/mbox`);
      // A dotlock left behind 10 minutes ago is stale: broken, and the delivery goes ahead.
      await Deno.writeTextFile(`${box}.lock`, "");
      const old = new Date(Date.now() - 600_000);
      await Deno.utime(`${box}.lock`, old, old);
      const id1 = await submit(
        server.port,
        "alice@localhost",
        ["carol@localhost"],
        "Subject: first\r\n\r\nFrom me\r\n>From you\r\nnot From here\r\n",
      );
      await server.waitForLog(new RegExp(`delivered id=${id1} to=<carol@localhost>`));

      // A live dotlock: the delivery waits, then defers with 4.2.0; once gone, it is delivered.
      await Deno.writeTextFile(`${box}.lock`, "");
      const id2 = await submit(
        server.port,
        "",
        ["carol@localhost"],
        "Subject: second\r\n\r\nFrom the bounce\r\n",
      );
      await server.waitForLog(
        new RegExp(`deferred id=${id2} to=<carol@localhost>[^\\n]*dsn=4\\.2\\.0[^\\n]*locked`),
        30_000,
      );
      await Deno.remove(`${box}.lock`);
      await server.waitForLog(new RegExp(`delivered id=${id2} to=<carol@localhost>`), 30_000);

      const text = await Deno.readTextFile(box);
      const seps = text.match(/^From \S+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/gm) ?? [];
      assert.equal(seps.length, 2, text);
      assert.match(seps[0], /^From alice@localhost /);
      assert.match(seps[1], /^From MAILER-DAEMON /);
      assert.match(text, /\nSubject: first\n\n>From me\n>>From you\nnot From here\n\nFrom /);
      assert.match(text, /\nSubject: second\n\n>From the bounce\n\n$/);
      assert.match(text, /^Return-Path: <>\nDelivered-To: carol@localhost$/m);
      assert.ok(text.indexOf("Subject: first") < text.indexOf("Subject: second"));
      assert.equal(await Deno.stat(`${box}.lock`).catch(() => null), null, "no lock left");
      assert.equal(((await Deno.stat(box)).mode ?? 0) & 0o777, 0o600);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "aliases: newaliases compiles; names, lists, |command, /file, :include:, loop 5.4.6",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skiff-alias-");
    const out = `${work}/out`;
    await Deno.mkdir(out, { mode: 0o777 });
    await Deno.chmod(out, 0o777);
    const script = await writeScript(work);
    await Deno.writeTextFile(`${work}/list`, "# the list\nerin, frank@localhost\n");
    await Deno.writeTextFile(
      `${work}/aliases`,
      `# test aliases
postmaster: bob
team: bob,
  carol
keep: keep, dave
cmd: "|${script} ${out} okcmd@x"
file: ${out}/file.mbox
inc: :include:${work}/list
loop1: loop2
loop2: loop1
`,
    );
    // newaliases and route need only the aliases path.
    await Deno.writeTextFile(
      `${work}/offline.toml`,
      `spool_dir = "${work}/spool"\n[local]\ndomains = ["localhost"]\n` +
        `[delivery]\naliases = "${work}/aliases"\n`,
    );
    const compiled = await runSkiff(["--config", `${work}/offline.toml`, "newaliases"]);
    assert.equal(compiled.code, 0, compiled.stderr);
    assert.match(compiled.stdout, /: 8 aliases/);
    assert.ok(await Deno.stat(`${work}/aliases.json`));
    const bv = await runSkiff([
      "--config",
      `${work}/offline.toml`,
      "sendmail",
      "-bv",
      "team@localhost",
      "loop1@localhost",
      "inc@localhost",
    ]);
    assert.equal(bv.code, 0, bv.stderr);
    assert.match(bv.stdout, /team@localhost: expands to bob, carol \(alias "team"\)/);
    assert.match(
      bv.stdout,
      /loop1@localhost: fails with 5\.4\.6 Alias loop: loop1 -> loop2 -> loop1/,
    );
    assert.match(bv.stdout, /inc@localhost: expands to erin, frank@localhost/);

    const server = await SkiffServer.start({
      dir: work,
      env: await nobodyEnv(),
      toml: `[delivery]\naliases = "${work}/aliases"\n`,
    });
    try {
      const id = await submit(
        server.port,
        "alice@localhost",
        [
          "team@localhost",
          "keep@localhost",
          "cmd@localhost",
          "file@localhost",
          "inc@localhost",
          "loop1@localhost",
        ],
        "Subject: to the aliases\r\n\r\nFrom the aliases test\r\n",
      );
      await server.waitForLog(
        new RegExp(`failed id=${id} to=<loop1@localhost>[^\\n]*dsn=5\\.4\\.6 status=bounced`),
      );
      for (const u of ["bob", "carol", "keep", "dave", "erin", "frank"]) {
        const files = await waitFor(
          async () => {
            const f = await maildirFiles(`${work}/mail/${u}`);
            return f.length > 0 ? f : null;
          },
          20_000,
          `mail for ${u}`,
        );
        assert.equal(files.length, 1, u);
        assert.match(await Deno.readTextFile(files[0]), /Subject: to the aliases/);
      }
      const rec = await readJson(`${out}/okcmd.json`);
      assert.deepEqual(rec.argv, [out, "okcmd@x"]);
      if (ROOT) assert.equal(rec.uid, 65534, "alias commands run as nobody");
      const mbox = await waitFor(
        () => Deno.readTextFile(`${out}/file.mbox`).catch(() => null),
        20_000,
        "the /file target",
      );
      assert.match(mbox, /^From alice@localhost /);
      assert.match(mbox, /\n>From the aliases test\n/);
      if (ROOT) {
        assert.equal((await Deno.stat(`${out}/file.mbox`)).uid, 65534, "files written as nobody");
      }
      const bounce = await waitFor(
        async () => {
          const t = await mailTexts(`${work}/mail/alice`);
          return t.length > 0 ? t : null;
        },
        20_000,
        "the loop bounce",
      );
      assert.equal(bounce.length, 1);
      assert.match(
        bounce[0],
        /Final-Recipient: rfc822; loop1@localhost\nAction: failed\nStatus: 5\.4\.6/,
      );
      assert.doesNotMatch(server.log, /aliases not compiled/);

      // newaliases while running: the manager picks up the new table.
      await Deno.writeTextFile(`${work}/aliases`, "team: frank\n");
      const again = await runSkiff(["--config", `${work}/offline.toml`, "newaliases"]);
      assert.equal(again.code, 0, again.stderr);
      // Each submission is routed with the table current at its delivery (checked at most once a second).
      await waitFor(
        async () => {
          const id2 = await submit(
            server.port,
            "alice@localhost",
            ["team@localhost"],
            "Subject: v2\r\n\r\nx\r\n",
          );
          const m = await server.waitForLog(
            new RegExp(
              `delivered id=${id2} to=<team@localhost>[^\\n]*alias \\\\"team\\\\" to (\\d+)`,
            ),
          );
          return m[1] === "1";
        },
        30_000,
        "the new aliases to be used",
      );
      await waitFor(
        async () => {
          const t = await mailTexts(`${work}/mail/frank`);
          return t.some((x) => x.includes("Subject: v2"));
        },
        20_000,
        "v2 for frank",
      );
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

/** A hostile SMTP server on one port: each connection misbehaves in the given way. */
function hostile(kind: "endless" | "overlong" | "bare-lf" | "mixed-codes"): {
  port: number;
  connections: () => number;
  close: () => void;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  const enc = new TextEncoder();
  (async () => {
    for await (const conn of listener) {
      connections++;
      (async () => {
        try {
          const buf = new Uint8Array(4096);
          if (kind === "bare-lf") {
            await conn.write(enc.encode("220 hostile ready\n"));
          } else {
            await conn.write(enc.encode("220 hostile ready\r\n"));
          }
          await conn.read(buf); // EHLO
          if (kind === "endless") {
            const chunk = enc.encode("250-and on and on and on\r\n".repeat(100));
            // Until the client hangs up (bounded: 10 MB at most).
            for (let i = 0; i < 4000; i++) await conn.write(chunk);
          } else if (kind === "overlong") {
            await conn.write(enc.encode("250-" + "x".repeat(100_000) + "\r\n"));
          } else if (kind === "mixed-codes") {
            await conn.write(enc.encode("250-hostile\r\n550-PIPELINING\r\n250 OK\r\n"));
          }
          while ((await conn.read(buf)) !== null) { /* until closed */ }
        } catch { /* the client hung up */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    connections: () => connections,
    close: () => listener.close(),
  };
}

Deno.test({
  name: "a hostile server through the manager: deferred, message kept, manager alive",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const kinds = ["endless", "overlong", "bare-lf", "mixed-codes"] as const;
    const servers = kinds.map((k) => hostile(k));
    const routes = kinds.map((k, i) =>
      `[[route]]\ndomain = "${k}.test"\ntype = "smtp"\nhost = "127.0.0.1:${
        servers[i].port
      }"\ntls = "none"\n`
    ).join("");
    const server = await SkiffServer.start({
      toml: routes,
      queue: "retry_min = 3600\nretry_max = 7200",
    });
    try {
      const ids: string[] = [];
      for (const k of kinds) {
        ids.push(
          await submit(
            server.port,
            "alice@localhost",
            [`x@${k}.test`],
            `Subject: ${k}\r\n\r\nkeep me\r\n`,
          ),
        );
      }
      const expect: Record<string, RegExp> = {
        endless: /longer than 100 lines/,
        overlong: /longer than \d+ bytes/,
        "bare-lf": /bare LF/,
        "mixed-codes": /Reply code 550 differs from 250/,
      };
      for (const [i, k] of kinds.entries()) {
        const m = await server.waitForLog(
          new RegExp(`deferred id=${ids[i]} to=<x@${k}\\.test>[^\\n]*`),
          20_000,
        );
        assert.match(m[0], /dsn=4\.5\.0 status=deferred text="Protocol error from /);
        assert.match(m[0], expect[k], m[0]);
      }
      // Every message is still queued; the manager still delivers.
      const spool = new Spool(`${server.dir}/spool`);
      const queued = await spool.list();
      for (const id of ids) assert.ok(queued.includes(id), `${id} kept`);
      const ok = await submit(
        server.port,
        "alice@localhost",
        ["bob@localhost"],
        "Subject: alive\r\n\r\nx\r\n",
      );
      await server.waitForLog(new RegExp(`delivered id=${ok} to=<bob@localhost>`));
      assert.doesNotMatch(server.log, /uncaught|panic|processing failed/i);
    } finally {
      await server.stop();
      await server.cleanup();
      for (const s of servers) s.close();
    }
  },
});

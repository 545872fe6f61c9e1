/**
 * The sendmail shim as real programs use it: wrappers named sendmail,
 * mailq and newaliases (argv[0] decides), a non-root user (nobody, through
 * setpriv) submitting with the manager up (unix socket, peer credentials)
 * and down (maildrop, picked up by `skiff flush`), forged senders refused
 * or flagged, bsd-mailx and `swaks --pipe 'sendmail -bs'` as clients, and
 * the DSN/BODY flags reaching the envelope.
 */
import assert from "node:assert/strict";
import { guardDns, maildirFiles, pathExists, runSkiff, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { makeShims, run, shimToml } from "./shim_helpers.ts";

/** A world-searchable test directory (nobody must reach run/ and maildrop/). */
async function openDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-shim-" });
  await Deno.chmod(dir, 0o755);
  return dir;
}

/** A config for runs without a manager (same layout as SkiffServer's). */
async function offlineConfig(dir: string, extra = "", more = ""): Promise<string> {
  const path = `${dir}/skiff.toml`;
  await Deno.writeTextFile(
    path,
    `spool_dir = "${dir}/spool"
[[listener]]
address = "127.0.0.1:1"
[local]
domains = ["localhost"]
maildir_root = "${dir}/mail"
[queue]
retry_min = 1
retry_max = 4
${shimToml(dir, extra)}
${guardDns(more)}`,
  );
  // What an installer (or the manager's first start) does: create the maildrop.
  const r = await runSkiff(["--config", path, "flush"]);
  assert.equal(r.code, 0, r.stderr);
  return path;
}

async function delivered(dir: string, user: string, count = 1): Promise<string[]> {
  const files = await waitFor(
    async () => {
      const f = await maildirFiles(`${dir}/mail/${user}`);
      return f.length >= count ? f : null;
    },
    20_000,
    `delivery to ${user}`,
  );
  return await Promise.all(files.map((f) => Deno.readTextFile(f)));
}

const SETPRIV = [PEERS.setpriv, PEERS.python3];

peerTest(
  "argv0: links named sendmail, mailq and newaliases act as those commands",
  [PEERS.python3],
  async () => {
    const dir = await openDir();
    try {
      await Deno.writeTextFile(`${dir}/aliases`, "postmaster: root\n");
      const cfg = await offlineConfig(dir, "", `[delivery]\naliases = "${dir}/aliases"`);
      const bin = await makeShims(dir, cfg);
      const q = await run([`${bin}/mailq`]);
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, /Mail queue is empty/);
      const bp = await run([`${bin}/sendmail`, "-bp"]);
      assert.match(bp.stdout, /Mail queue is empty/);
      // -bi / -I / newaliases compile the aliases; -bv prints the routing (the router's commands).
      for (
        const cmd of [[`${bin}/newaliases`], [`${bin}/sendmail`, "-bi"], [`${bin}/sendmail`, "-I"]]
      ) {
        const r = await run(cmd);
        assert.equal(r.code, 0, `${cmd.join(" ")}: ${r.stderr}`);
        assert.match(r.stdout, /1 aliases/);
      }
      const bv = await run([`${bin}/sendmail`, "-bv", "postmaster@localhost"]);
      assert.equal(bv.code, 0, bv.stderr);
      assert.match(bv.stdout, /^postmaster@localhost: expands to root\b/m);
      const bad = await run([`${bin}/sendmail`, "-Y", "bob@localhost"], { stdin: "" });
      assert.equal(bad.code, 64);
      assert.match(bad.stderr, /Unknown option -Y/);
      const bd = await run([`${bin}/sendmail`, "-bd"]);
      assert.equal(bd.code, 64);
      assert.match(bd.stderr, /skiff serve/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

peerTest(
  "as nobody: sendmail -t -i with the manager up and down arrives with the user's sender; forging is refused",
  SETPRIV,
  async () => {
    const dir = await openDir();
    const server = await SkiffServer.start({ dir, toml: shimToml(dir) });
    let stopped = false;
    try {
      const bin = await makeShims(dir, server.configPath);
      const msg = (s: string) => `To: bob@localhost\nSubject: ${s}\n\nfrom nobody\n.\nstill here\n`;
      const up = await run([`${bin}/sendmail`, "-t", "-i"], { stdin: msg("up"), nobody: true });
      assert.equal(up.code, 0, up.stderr);
      const [first] = await delivered(dir, "bob");
      assert.match(first, /^Return-Path: <nobody@localhost>/);
      assert.match(first, /uid 65534/); // the kernel's word, in the Received header
      assert.match(first, /^From: .*<nobody@localhost>/m);
      assert.match(first, /\r?\nstill here/); // -i: the lone dot did not end the input
      // nobody may not use root's address, on either path.
      const forged = await run([`${bin}/sendmail`, "-f", "root@localhost", "bob@localhost"], {
        stdin: "Subject: forged\n\nx\n",
        nobody: true,
      });
      assert.equal(forged.code, 77, forged.stderr);
      const mq = await run([`${bin}/mailq`], { nobody: true });
      assert.equal(mq.code, 77, mq.stderr);
      assert.match(mq.stderr, /cannot read the queue/);
      assert.match(forged.stderr, /may not use the sender address <root@localhost>/);
      await server.stop();
      stopped = true;
      const down = await run([`${bin}/sendmail`, "-t", "-i"], { stdin: msg("down"), nobody: true });
      assert.equal(down.code, 0, down.stderr);
      const drops = [...Deno.readDirSync(`${dir}/maildrop`)];
      assert.equal(drops.length, 1);
      assert.equal(Deno.statSync(`${dir}/maildrop/${drops[0].name}`).uid, 65534);
      const f = await runSkiff(["--config", server.configPath, "flush"]);
      assert.equal(f.code, 0, f.stdout + f.stderr);
      assert.match(f.stdout, /1 picked up from the maildrop/);
      const all = await delivered(dir, "bob", 2);
      const second = all.find((t) => t.includes("Subject: down"))!;
      assert.match(second, /^Return-Path: <nobody@localhost>/);
      assert.match(second, /from userid 65534/);
    } finally {
      if (!stopped) await server.stop();
      await server.cleanup();
    }
  },
);

peerTest(
  "untrusted_sender = warn: a foreign -f is accepted with X-Authentication-Warning; planted links are refused",
  SETPRIV,
  async () => {
    const dir = await openDir();
    try {
      const cfg = await offlineConfig(dir, 'untrusted_sender = "warn"');
      const bin = await makeShims(dir, cfg);
      const r = await run([`${bin}/sendmail`, "-f", "root@localhost", "bob@localhost"], {
        stdin: "Subject: warned\n\nx\n",
        nobody: true,
      });
      assert.equal(r.code, 0, r.stderr);
      // Planted names: a symlink and a hard link to a file nobody owns are never read.
      const secret = `${dir}/secret`;
      await Deno.writeTextFile(secret, "skiff-maildrop 1\n{}\n");
      await Deno.chmod(secret, 0o700);
      await Deno.symlink(secret, `${dir}/maildrop/aa.${"0".repeat(24)}`);
      await Deno.link(secret, `${dir}/maildrop/ab.${"0".repeat(24)}`);
      const f = await runSkiff(["--config", cfg, "flush"]);
      assert.equal(f.code, 0, f.stdout + f.stderr);
      assert.match(f.stderr, /file refused file=aa\.0+ error="Refused [^"]*: a symbolic link"/);
      assert.match(f.stderr, /file refused file=ab\.0+ error="Refused [^"]*: has 2 hard links"/);
      assert.equal(await Deno.readTextFile(secret), "skiff-maildrop 1\n{}\n");
      const [text] = await delivered(dir, "bob");
      assert.match(text, /^Return-Path: <root@localhost>/);
      assert.match(
        text,
        /^X-Authentication-Warning: localhost: nobody set sender to root@localhost using -f/m,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

peerTest(
  "bsd-mailx submits through the shim (sendmail -i -t -f)",
  [PEERS.mailx, PEERS.python3],
  async () => {
    const dir = await openDir();
    const server = await SkiffServer.start({ dir, toml: shimToml(dir) });
    try {
      const bin = await makeShims(dir, server.configPath);
      await Deno.writeTextFile(`${dir}/mailrc`, `set sendmail=${bin}/sendmail\n`);
      const r = await run([
        PEERS.mailx.bin,
        "-s",
        "from mailx",
        "-r",
        "root@localhost",
        "carol@localhost",
      ], {
        stdin: "hello from mailx\n",
        env: { MAILRC: `${dir}/mailrc` },
      });
      assert.equal(r.code, 0, r.stderr);
      const [text] = await delivered(dir, "carol");
      assert.match(text, /^Subject: from mailx/m);
      assert.match(text, /^Return-Path: <root@localhost>/);
      assert.match(text, /^Message-ID: </m);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);

peerTest(
  "swaks --pipe 'sendmail -bs' with the manager down and up",
  [PEERS.swaks, PEERS.python3],
  async () => {
    const dir = await openDir();
    const cfg = await offlineConfig(dir);
    const bin = await makeShims(dir, cfg);
    const swaks = (subject: string) =>
      run([
        PEERS.swaks.bin,
        "--pipe",
        `${bin}/sendmail -bs`,
        "--from",
        "root@localhost",
        "--to",
        "dave@localhost",
        "--header",
        `Subject: ${subject}`,
      ]);
    // Down: the session runs in the shim and the message waits in the maildrop.
    const down = await swaks("bs-down");
    assert.equal(down.code, 0, down.stdout + down.stderr);
    assert.match(down.stdout, /250 2\.0\.0 Ok: queued as/);
    assert.equal([...Deno.readDirSync(`${dir}/maildrop`)].length, 1);
    const server = await SkiffServer.start({ dir, toml: shimToml(dir) }); // picks it up at start
    try {
      await delivered(dir, "dave", 1);
      const up = await swaks("bs-up");
      assert.equal(up.code, 0, up.stdout + up.stderr);
      const all = await delivered(dir, "dave", 2);
      assert.ok(
        all.some((t) => /Subject: bs-down/.test(t)) && all.some((t) => /Subject: bs-up/.test(t)),
      );
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);

peerTest(
  "-N -R -V -B -F -v reach the envelope and headers; -q and -qR flush",
  [PEERS.python3],
  async () => {
    const dir = await openDir();
    try {
      // A smarthost that refuses connections: the message stays deferred.
      const cfg = await offlineConfig(
        dir,
        "",
        `[relay]\nrelayhost = "127.0.0.1:1"\nconnect_timeout = 2`,
      );
      const bin = await makeShims(dir, cfg);
      const r = await run([
        `${bin}/sendmail`,
        "-v",
        "-N",
        "success,failure",
        "-R",
        "hdrs",
        "-V",
        "envid-42",
        "-B",
        "8bitmime",
        "-F",
        "Ann Example",
        "-oQ/ignored",
        "far@example.com",
      ], { stdin: "Subject: dsn\n\nx\n" });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /warning: Option -oQ\/ignored ignored/);
      assert.match(r.stderr, /queued in the maildrop as /); // -v
      const q = await run([`${bin}/sendmail`, "-q"]);
      assert.match(q.stdout, /queue pass done, 1 picked up/);
      const list = await runSkiff(["--config", cfg, "queue", "list", "--json"]);
      const [entry] = list.stdout.trim().split("\n").map((l) => JSON.parse(l));
      const show = await runSkiff(["--config", cfg, "queue", "show", entry.queue_id, "--json"]);
      const env = JSON.parse(show.stdout).envelope;
      assert.deepEqual(env.recipients[0].notify, ["SUCCESS", "FAILURE"]);
      assert.deepEqual(env.params, { RET: "HDRS", ENVID: "envid-42", BODY: "8BITMIME" });
      const file = await Deno.readTextFile(`${dir}/spool/queue/${entry.queue_id}`);
      assert.match(file, /^From: Ann Example <root@localhost>/m);
      const qr = await run([`${bin}/sendmail`, "-qRexample.com"]);
      assert.match(qr.stdout, /1 message\(s\) scheduled for immediate delivery/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

peerTest(
  "mailq --config FILE lists that spool (not the default) and counts maildrop files waiting",
  [PEERS.python3],
  async () => {
    const dir = await openDir();
    try {
      const cfg = await offlineConfig(dir);
      // The wrappers carry $SKIFF_CONFIG; --config on the command line must win over it.
      const bin = await makeShims(dir, `${dir}/not-this.toml`);
      const drop = await run([`${bin}/sendmail`, "--config", cfg, "-i", "bob@localhost"], {
        stdin: "Subject: waiting\n\nx\n",
      });
      assert.equal(drop.code, 0, drop.stderr);
      const q = await run([`${bin}/mailq`, "--config", cfg], { cwd: dir });
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, /Mail queue is empty/);
      assert.match(q.stdout, /1 message\(s\) waiting in the maildrop/);
      // Nothing was created under the wrapper's working directory's default ./var.
      assert.equal(pathExists(`${dir}/var`), false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/**
 * Files and programs opened on a user's behalf, with real unix accounts
 * (skuf*) that each test creates and removes, through a real `skiff serve`
 * started as root: a ~/.forward that is a symlink to a root-only file, a
 * hard link, another user's or group-writable is refused and the protected
 * text appears nowhere (log, spool, mailbox, bounce); mbox symlinks, hard
 * links and wrong owners are refused and 8-bit mail lands byte-exact; a
 * .forward program gets only the documented environment, the real
 * RECIPIENT and its home as cwd; a pipe route without user= runs as nobody
 * and never sees an address starting with "-". Skipped (with a message)
 * when not root: CI runs as root.
 */
import assert from "node:assert/strict";
import { SkiffServer, submitMessage, waitFor } from "./harness.ts";
import { readableDenoDir } from "./shim_helpers.ts";
import { run } from "./run_cmd.ts";

const ROOT = Deno.uid() === 0;
const ignore = !ROOT;
if (ignore) console.warn("user_files_test: needs root to create test users; skipped");

interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** Creates a user skuf<tag><random> with its home under `base`; remove() deletes it. */
async function makeUser(base: string, tag: string): Promise<Account> {
  const rnd = crypto.getRandomValues(new Uint8Array(3));
  const name = `skuf${tag}${[...rnd].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  const home = `${base}/home/${name}`;
  await Deno.mkdir(`${base}/home`, { recursive: true, mode: 0o755 });
  const r = await run(["useradd", "-M", "-d", home, "-s", "/bin/sh", "-U", name]);
  assert.equal(r.code, 0, `useradd ${name}: ${r.out}`);
  const id = await run(["id", "-u", name]);
  const gid = await run(["id", "-g", name]);
  const acct = { name, uid: Number(id.out.trim()), gid: Number(gid.out.trim()), home };
  await Deno.mkdir(home, { mode: 0o755 });
  await Deno.chown(home, acct.uid, acct.gid);
  return acct;
}

async function removeUsers(users: Account[]): Promise<void> {
  for (const u of users) await run(["userdel", u.name]);
}

/** A directory tree every test user can reach. */
async function openDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.chmod(dir, 0o755);
  return dir;
}

/** Every file's text under a directory (recursively), for "appears nowhere" checks. */
async function allText(dir: string): Promise<string> {
  let out = "";
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out += await allText(p);
    else if (e.isFile) out += new TextDecoder("latin1").decode(await Deno.readFile(p)) + "\n";
  }
  return out;
}

async function serverEnv(): Promise<Record<string, string>> {
  return { DENO_DIR: await readableDenoDir(), SKUF_MANAGER_SECRET: "manager-password-1" };
}

async function mailIn(dir: string): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const e of Deno.readDir(`${dir}/new`)) files.push(e.name);
  } catch { /* not made yet */ }
  return await Promise.all(files.map((f) => Deno.readTextFile(`${dir}/new/${f}`)));
}

Deno.test({
  name:
    ".forward symlinked to a root-only file, hard-linked, another user's or group-writable is refused and its text appears nowhere",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skuf-fwd-");
    const users: Account[] = [];
    let server: SkiffServer | null = null;
    try {
      const [sl, hl, wo, gw] = [
        await makeUser(work, "sl"),
        await makeUser(work, "hl"),
        await makeUser(work, "wo"),
        await makeUser(work, "gw"),
      ];
      users.push(sl, hl, wo, gw);
      // The protected texts look like addresses, as the first line of /etc/shadow would.
      const secret = "skuf-root-secret-41@example.net";
      await Deno.writeTextFile(`${work}/rootonly`, `${secret}\n`, { mode: 0o600 });
      await Deno.symlink(`${work}/rootonly`, `${sl.home}/.forward`);
      const linked = "skuf-linked-secret-42@example.net";
      await Deno.writeTextFile(`${work}/rootlinked`, `${linked}\n`, { mode: 0o600 });
      await Deno.link(`${work}/rootlinked`, `${hl.home}/.forward`);
      const other = "skuf-other-owner-43@example.net";
      await Deno.writeTextFile(`${wo.home}/.forward`, `${other}\n`, { mode: 0o644 });
      await Deno.chown(`${wo.home}/.forward`, 65534, 65534);
      const group = "skuf-group-writable-44@example.net";
      await Deno.writeTextFile(`${gw.home}/.forward`, `${group}\n`);
      await Deno.chmod(`${gw.home}/.forward`, 0o664);
      await Deno.chown(`${gw.home}/.forward`, gw.uid, gw.gid);
      await Deno.mkdir(`${work}/srv/mail`, { recursive: true });
      await Deno.chmod(`${work}/srv`, 0o755);
      await Deno.chmod(`${work}/srv/mail`, 0o1777);

      server = await SkiffServer.start({
        dir: `${work}/srv`,
        env: await serverEnv(),
        toml: `[delivery]\nforward = true\nlocal_users = true\n`,
      });
      const rcpts = users.map((u) => `${u.name}@localhost`);
      const id = await submitMessage(server.port, { from: "alice@localhost", to: rcpts });
      const reasons = [
        [sl, /a symbolic link/],
        [hl, /has 2 hard links/],
        [wo, /owned by uid 65534/],
        [gw, /writable by group or others/],
      ] as const;
      for (const [u, why] of reasons) {
        const line = await server.waitForLog(
          new RegExp(`\\.forward refused[^\\n]*to=<${u.name}@localhost>[^\\n]*`),
          30_000,
        );
        assert.match(line[0], why, u.name);
        // Delivered to the mailbox instead, as the user.
        await server.waitForLog(new RegExp(`delivered id=\\S+ to=<${u.name}@localhost>`), 30_000);
        const box = `${work}/srv/mail/${u.name}`;
        const texts = await waitFor(
          async () => {
            const t = await mailIn(box);
            return t.length > 0 ? t : null;
          },
          10_000,
          box,
        );
        assert.equal(texts.length, 1);
        assert.equal((await Deno.stat(box)).uid, u.uid, "the mailbox is written as the user");
      }
      assert.doesNotMatch(server.log, new RegExp(`failed id=${id}`));
      // The protected text is nowhere: not logged, queued, bounced or delivered.
      const everywhere = server.log + await allText(`${work}/srv`);
      for (const s of [secret, linked, other, group]) {
        assert.ok(!everywhere.includes(s), `${s} leaked`);
      }
      assert.equal(await Deno.readTextFile(`${work}/rootonly`), `${secret}\n`);
    } finally {
      await server?.stop();
      await removeUsers(users);
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    ".forward without local_users: a refused one falls back to the mailbox in the same pass with no 5.4.6 text; a safe one forwards",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skuf-fwd2-");
    const users: Account[] = [];
    let server: SkiffServer | null = null;
    try {
      const [sl, ok] = [await makeUser(work, "ns"), await makeUser(work, "nf")];
      users.push(sl, ok);
      // Not an address: the old router put this line into a 5.4.6 error text and a bounce.
      const secret = "root:skuf-hash-$6$Zq9:19000:0:99999:7:::";
      await Deno.writeTextFile(`${work}/shadowish`, `${secret}\n`, { mode: 0o600 });
      await Deno.symlink(`${work}/shadowish`, `${sl.home}/.forward`);
      await Deno.writeTextFile(`${ok.home}/.forward`, "carol@localhost\n");
      await Deno.chown(`${ok.home}/.forward`, ok.uid, ok.gid);
      await Deno.mkdir(`${work}/srv`);
      server = await SkiffServer.start({
        dir: `${work}/srv`,
        env: await serverEnv(),
        toml: `[delivery]\nforward = true\nlocal_users = false\n`,
      });
      const id = await submitMessage(server.port, {
        from: "alice@localhost",
        to: [`${sl.name}@localhost`, `${ok.name}@localhost`],
      });
      await server.waitForLog(new RegExp(`\\.forward refused[^\\n]*a symbolic link`), 30_000);
      await server.waitForLog(new RegExp(`delivered id=${id} to=<${sl.name}@localhost>`), 30_000);
      await server.waitForLog(/delivered id=\S+ to=<carol@localhost>/, 30_000);
      assert.equal((await mailIn(`${work}/srv/mail/${sl.name}`)).length, 1);
      assert.equal((await mailIn(`${work}/srv/mail/carol`)).length, 1, "forwarded");
      assert.equal((await mailIn(`${work}/srv/mail/${ok.name}`)).length, 0, "not kept");
      assert.doesNotMatch(server.log, /dsn=5\.4\.6/);
      const everywhere = server.log + await allText(`${work}/srv`);
      assert.ok(!everywhere.includes("skuf-hash"), "the protected line leaked");
    } finally {
      await server?.stop();
      await removeUsers(users);
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

/** Records the environment the program was started with, its cwd, uid and stdin. */
const RECORD_SH = `#!/bin/sh
out="$1"
tag="$2"
tr '\\000' '\\n' < /proc/$$/environ > "$out/$tag.env"
readlink /proc/$$/cwd > "$out/$tag.cwd"
id -u > "$out/$tag.uid"
shift 2
for a in "$@"; do echo "$a"; done > "$out/$tag.args"
cat > "$out/$tag.msg"
echo done > "$out/$tag.done"
`;

async function writeRecorder(dir: string): Promise<string> {
  const path = `${dir}/record.sh`;
  await Deno.writeTextFile(path, RECORD_SH);
  await Deno.chmod(path, 0o755);
  return path;
}

async function readRecord(out: string, tag: string) {
  await waitFor(() => Deno.readTextFile(`${out}/${tag}.done`).catch(() => null), 30_000, tag);
  const env = Object.fromEntries(
    (await Deno.readTextFile(`${out}/${tag}.env`)).split("\n").filter((l) => l !== "").map(
      (l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)],
    ),
  );
  return {
    env,
    cwd: (await Deno.readTextFile(`${out}/${tag}.cwd`)).trim(),
    uid: Number((await Deno.readTextFile(`${out}/${tag}.uid`)).trim()),
    args: (await Deno.readTextFile(`${out}/${tag}.args`)).split("\n").filter((l) => l !== ""),
  };
}

Deno.test({
  name:
    ".forward program runs as the user with only the documented environment, the real RECIPIENT and cwd home",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skuf-env-");
    const users: Account[] = [];
    let server: SkiffServer | null = null;
    try {
      const u = await makeUser(work, "pe");
      users.push(u);
      const out = `${work}/out`;
      await Deno.mkdir(out, { mode: 0o777 });
      await Deno.chmod(out, 0o777);
      const script = await writeRecorder(work);
      await Deno.writeTextFile(`${u.home}/.forward`, `"|${script} ${out} fwd"\n`);
      await Deno.chown(`${u.home}/.forward`, u.uid, u.gid);
      await Deno.mkdir(`${work}/srv`);
      server = await SkiffServer.start({
        dir: `${work}/srv`,
        env: await serverEnv(),
        toml: `[delivery]\nforward = true\nlocal_users = true\n`,
      });
      const to = `${u.name}@localhost`;
      await submitMessage(server.port, { from: "alice@localhost", to });
      const rec = await readRecord(out, "fwd");
      assert.deepEqual(rec.env, {
        PATH: "/usr/bin:/bin",
        SENDER: "alice@localhost",
        RECIPIENT: to,
        LOCAL: u.name,
        DOMAIN: "localhost",
        USER: u.name,
        LOGNAME: u.name,
        HOME: u.home,
        SHELL: "/bin/sh",
      });
      assert.equal(rec.uid, u.uid, "run as the forwarding user");
      assert.equal(rec.cwd, u.home, "working directory is the user's home");
    } finally {
      await server?.stop();
      await removeUsers(users);
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "pipe route without user= runs as nobody (default_privs) and refuses an address starting with '-'",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skuf-pipe-");
    let server: SkiffServer | null = null;
    try {
      const out = `${work}/out`;
      await Deno.mkdir(out, { mode: 0o777 });
      await Deno.chmod(out, 0o777);
      const script = await writeRecorder(work);
      await Deno.mkdir(`${work}/srv`);
      const command = [script, out, "route", "{recipient}", "{sender}"];
      server = await SkiffServer.start({
        dir: `${work}/srv`,
        env: await serverEnv(),
        toml: `[[route]]\ndomain = "pipe.test"\ntype = "pipe"\ncommand = ${
          JSON.stringify(command)
        }\n`,
      });
      const id = await submitMessage(server.port, { from: "alice@localhost", to: "ok@pipe.test" });
      const rec = await readRecord(out, "route");
      assert.equal(rec.uid, 65534, "a pipe route with no user= runs as nobody, never root");
      assert.equal(rec.cwd, "/", "nobody's home does not exist: cwd is /");
      assert.deepEqual(rec.args, ["ok@pipe.test", "alice@localhost"]);
      assert.equal(rec.env.SKUF_MANAGER_SECRET, undefined);
      await server.waitForLog(new RegExp(`delivered id=${id} to=<ok@pipe\\.test>`));
      await Deno.remove(`${out}/route.done`);

      const id2 = await submitMessage(server.port, {
        from: "alice@localhost",
        to: "-oX@pipe.test",
      });
      await server.waitForLog(
        new RegExp(`failed id=${id2} to=<-oX@pipe\\.test>[^\\n]*dsn=5\\.1\\.3[^\\n]*starts with`),
        30_000,
      );
      const id3 = await submitMessage(server.port, { from: "-f@localhost", to: "ok2@pipe.test" });
      await server.waitForLog(
        new RegExp(`failed id=${id3} to=<ok2@pipe\\.test>[^\\n]*dsn=5\\.1\\.3`),
        30_000,
      );
      assert.equal(await Deno.stat(`${out}/route.done`).catch(() => null), null, "never run");
    } finally {
      await server?.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "mbox symlink, hard link and wrong owner are refused, files untouched; 8-bit mail lands byte-exact",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await openDir("skuf-mbox-");
    const users: Account[] = [];
    let server: SkiffServer | null = null;
    try {
      const [ms, mh, mw, m8] = [
        await makeUser(work, "ms"),
        await makeUser(work, "mh"),
        await makeUser(work, "mw"),
        await makeUser(work, "m8"),
      ];
      users.push(ms, mh, mw, m8);
      const spool = `${work}/mail`;
      await Deno.mkdir(spool);
      await Deno.chmod(spool, 0o1777); // like /var/mail: shared, sticky
      const rootFile = `${work}/root-owned`;
      await Deno.writeTextFile(rootFile, "ROOT ORIGINAL\n", { mode: 0o644 });
      await Deno.symlink(rootFile, `${spool}/${ms.name}`);
      const own = `${mh.home}/other`;
      await Deno.writeTextFile(own, "MH ORIGINAL\n");
      await Deno.chown(own, mh.uid, mh.gid);
      await Deno.link(own, `${spool}/${mh.name}`);
      await Deno.writeTextFile(`${spool}/${mw.name}`, "NOBODY ORIGINAL\n", { mode: 0o666 });
      await Deno.chmod(`${spool}/${mw.name}`, 0o666);
      await Deno.chown(`${spool}/${mw.name}`, 65534, 65534);
      await Deno.mkdir(`${work}/srv`);
      server = await SkiffServer.start({
        dir: `${work}/srv`,
        env: await serverEnv(),
        toml: `[delivery]\nlocal_mailbox = "mbox"\nmbox_dir = "${spool}"\nlocal_users = true\n`,
      });
      const bad = [[ms, /a symbolic link/], [mh, /has 2 hard links/], [mw, /owned by uid 65534/]];
      const id = await submitMessage(server.port, {
        from: "alice@localhost",
        to: bad.map(([u]) => `${(u as Account).name}@localhost`),
      });
      for (const [u, why] of bad) {
        const line = await server.waitForLog(
          new RegExp(`deferred id=${id} to=<${(u as Account).name}@localhost>[^\\n]*`),
          30_000,
        );
        assert.match(line[0], /dsn=4\.2\.0/);
        assert.match(line[0], why as RegExp);
      }
      assert.equal(await Deno.readTextFile(rootFile), "ROOT ORIGINAL\n");
      assert.equal(await Deno.readTextFile(own), "MH ORIGINAL\n");
      assert.equal(await Deno.readTextFile(`${spool}/${mw.name}`), "NOBODY ORIGINAL\n");

      // 8-bit bytes (Latin-1, not UTF-8) and a "From " line with them, sent as raw bytes.
      const body = "Subject: caf\xe9\r\n\r\nFrom \xe9t\xe9 \xff\xfe\r\n>From x\r\nend \x80\r\n";
      const id8 = await submitMessage(server.port, {
        from: "alice@localhost",
        to: `${m8.name}@localhost`,
        data: body,
      });
      await server.waitForLog(new RegExp(`delivered id=${id8} to=<${m8.name}@localhost>`), 30_000);
      const bytes = await Deno.readFile(`${spool}/${m8.name}`);
      const st = await Deno.lstat(`${spool}/${m8.name}`);
      assert.equal(st.uid, m8.uid, "the mbox is created by and for the user");
      const want = Uint8Array.from(
        [..."Subject: caf\xe9\n\n>From \xe9t\xe9 \xff\xfe\n>>From x\nend \x80\n\n"].map((c) =>
          c.charCodeAt(0)
        ),
      );
      const tail = bytes.subarray(bytes.length - want.length);
      assert.deepEqual([...tail], [...want], "content written byte-exact, >From quoted on bytes");
    } finally {
      await server?.stop();
      await removeUsers(users);
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

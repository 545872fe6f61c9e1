/**
 * lib/sys/safe_open.ts on real files: a symlink is never followed, a FIFO
 * or device never blocks the open, only the open descriptor is judged
 * (links, owner, mode), at most limit + 1 bytes are read however large the
 * file; appending refuses the same things and never writes through a
 * symlink. Plus the pure rules built on it: mbox bytes and pipe arguments.
 */
import assert from "node:assert/strict";
import {
  checkSharedDir,
  safeOpenAppend,
  safeReadFile,
  safeReadTextSync,
  UnsafeFileError,
} from "../lib/sys/safe_open.ts";
import { mboxEntry } from "../lib/deliver/mbox.ts";
import { guardArgs, pipeEnv } from "../lib/deliver/pipe.ts";
import { run } from "./run_cmd.ts";

const uid = Deno.uid()!;

async function refused(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof UnsafeFileError && re.test(e.message));
}

Deno.test("safe read refuses symlinks, FIFOs, devices, hard links, wrong owners and modes without blocking", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skuf-safe-" });
  try {
    await Deno.writeTextFile(`${dir}/secret`, "secret text\n", { mode: 0o600 });
    await Deno.symlink(`${dir}/secret`, `${dir}/link`);
    await refused(safeReadFile(`${dir}/link`, { limit: 100 }), /a symbolic link/);
    assert.equal(safeReadTextSync(`${dir}/link`, { limit: 100 }), null);

    assert.equal((await run(["mkfifo", `${dir}/fifo`])).code, 0);
    // No writer ever opens it: a blocking open would hang this test forever.
    await refused(safeReadFile(`${dir}/fifo`, { limit: 100 }), /not a regular file \(a FIFO\)/);
    assert.equal(safeReadTextSync(`${dir}/fifo`, { limit: 100 }), null);
    await refused(safeReadFile("/dev/zero", { limit: 100 }), /a device/);

    await Deno.link(`${dir}/secret`, `${dir}/hard`);
    await refused(safeReadFile(`${dir}/hard`, { limit: 100 }), /has 2 hard links/);
    await Deno.remove(`${dir}/hard`);

    await refused(
      safeReadFile(`${dir}/secret`, { limit: 100, owners: [uid + 1] }),
      /owned by uid/,
    );
    await Deno.chmod(`${dir}/secret`, 0o620);
    await refused(
      safeReadFile(`${dir}/secret`, { limit: 100, noGroupOtherWrite: true }),
      /writable by group or others/,
    );
    await Deno.chmod(`${dir}/secret`, 0o600);
    const ok = await safeReadFile(`${dir}/secret`, { limit: 100, owners: [uid] });
    assert.equal(new TextDecoder().decode(ok!.bytes), "secret text\n");
    assert.equal(await safeReadFile(`${dir}/missing`, { limit: 100 }), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safe read stops at limit + 1 bytes however large the file is", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skuf-safe-" });
  try {
    await Deno.writeFile(`${dir}/big`, new Uint8Array(1 << 20));
    await refused(safeReadFile(`${dir}/big`, { limit: 1000 }), /larger than 1000 bytes/);
    await Deno.writeFile(`${dir}/exact`, new Uint8Array(1000));
    assert.equal((await safeReadFile(`${dir}/exact`, { limit: 1000 }))!.bytes.length, 1000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safe append never writes through a symlink, a hard link or another owner's file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skuf-safe-" });
  try {
    await Deno.writeTextFile(`${dir}/target`, "ORIGINAL\n");
    await Deno.symlink(`${dir}/target`, `${dir}/box`);
    await refused(safeOpenAppend(`${dir}/box`, { owners: [uid], createMode: 0o600 }), /symbolic/);
    await Deno.remove(`${dir}/box`);
    await Deno.link(`${dir}/target`, `${dir}/box`);
    await refused(safeOpenAppend(`${dir}/box`, { owners: [uid] }), /has 2 hard links/);
    await Deno.remove(`${dir}/box`);
    await refused(safeOpenAppend(`${dir}/target`, { owners: [uid + 1] }), /owned by uid/);
    assert.equal(await Deno.readTextFile(`${dir}/target`), "ORIGINAL\n");
    // Missing: created exclusively with the mode asked for.
    const f = await safeOpenAppend(`${dir}/new`, { owners: [uid], createMode: 0o600 });
    await f.write(new TextEncoder().encode("x"));
    f.close();
    assert.equal(((await Deno.stat(`${dir}/new`)).mode ?? 0) & 0o777, 0o600);

    await Deno.chmod(dir, 0o777);
    await refused(checkSharedDir(dir), /writable by others and not sticky/);
    await Deno.chmod(dir, 0o1777);
    await checkSharedDir(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mbox entry keeps 8-bit bytes exact and quotes >From on bytes", () => {
  const latin1 = (s: string) => Uint8Array.from([...s].map((c) => c.charCodeAt(0)));
  const entry = mboxEntry({
    path: "/x",
    returnPath: "a@b",
    deliveredTo: "c@d",
    content: latin1("S: \xe9\r\n\r\nFrom \xff\r\n>From \x80\r\nFromage\r\n"),
    now: 0,
  });
  const want = latin1("S: \xe9\n\n>From \xff\n>>From \x80\nFromage\n\n");
  assert.deepEqual([...entry.subarray(entry.length - want.length)], [...want]);
});

Deno.test("pipe arguments: an address starting with '-' is never a whole argument; env is the documented list", () => {
  const vars = { recipient: "-oQ/tmp/x@example.org", sender: "a@b", user: "u", domain: "d" };
  assert.throws(
    () => guardArgs(["/bin/prog", "{recipient}"], vars),
    /starts with "-" and is not passed/,
  );
  // Inside a longer argument it cannot be taken for an option.
  assert.deepEqual(guardArgs(["/bin/prog", "--to={recipient}"], vars), [
    "--to=-oQ/tmp/x@example.org",
  ]);
  const env = pipeEnv({
    command: ["/bin/prog"],
    vars: { recipient: "bob@example.org", sender: "", user: "bob", domain: "example.org" },
    content: new Uint8Array(0),
    timeoutMs: 1,
    account: { home: "/home/bob", shell: "/bin/sh" },
  });
  assert.deepEqual(Object.keys(env).sort(), [
    "DOMAIN",
    "HOME",
    "LOCAL",
    "LOGNAME",
    "PATH",
    "RECIPIENT",
    "SENDER",
    "SHELL",
    "USER",
  ]);
  assert.equal(env.RECIPIENT, "bob@example.org");
  assert.equal(env.LOCAL, "bob");
});

Deno.test("symlinks are refused under skiff's granular permissions too (Deno resolves them before open(2) there)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skuf-safe-" });
  try {
    await Deno.writeTextFile(`${dir}/secret`, "secret text\n");
    await Deno.symlink(`${dir}/secret`, `${dir}/link`);
    const lib = new URL("../lib/sys/safe_open.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/probe.ts`,
      `import { safeOpenAppend, safeReadFile } from ${JSON.stringify(lib)};
const out: string[] = [];
for (const f of [() => safeReadFile(${JSON.stringify(`${dir}/link`)}, { limit: 100 }),
  () => safeOpenAppend(${JSON.stringify(`${dir}/link`)}, { createMode: 0o600 })]) {
  try { await f(); out.push("opened"); } catch (e) { out.push((e as Error).message); }
}
console.log(JSON.stringify(out));
`,
    );
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", `${dir}/probe.ts`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, text);
    const out = JSON.parse(new TextDecoder().decode(r.stdout));
    assert.equal(out.length, 2);
    for (const m of out) assert.match(m, /a symbolic link/);
    assert.equal(await Deno.readTextFile(`${dir}/secret`), "secret text\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a file grown between the descriptor check and the read is still cut at limit + 1 bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skuf-safe-" });
  try {
    const path = `${dir}/drop`;
    await Deno.writeFile(path, new Uint8Array(10));
    // readIf runs after fstat and before the read: the file grows right there.
    const grow = (n: number) => () => {
      Deno.writeFileSync(path, new Uint8Array(n), { append: true });
      return true;
    };
    await refused(
      safeReadFile(path, { limit: 1000, readIf: grow(200 * 1024 * 1024 / 100) }),
      /larger than 1000 bytes/,
    );
    await Deno.writeFile(path, new Uint8Array(10));
    const ok = await safeReadFile(path, { limit: 1000, readIf: grow(500) });
    assert.equal(ok!.bytes.length, 510, "growth within the limit is read in full");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The spool on real files in a temp dir: the commit path, what an operator
 * sees with `cat`, crash leftovers, streaming content, appends after a torn
 * write, id validation and access from a separate process.
 */

import assert from "node:assert/strict";
import {
  DirSyncer,
  type Envelope,
  isQueueId,
  newQueueId,
  parseHeader,
  QUEUE_ID_LENGTH,
  reseal,
  SEALED_HEADER_LENGTH,
  Spool,
  SpoolCorruptError,
  TORN_MARK,
  writeFileDurably,
} from "../lib/spool/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function envelope(id: string, size: number, extra: Partial<Envelope> = {}): Envelope {
  return {
    id,
    from: "alice@example.org",
    recipients: [{ address: "bob@example.net", notify: ["FAILURE"] }, {
      address: "carol@example.com",
    }],
    received: 1_700_000_000_000,
    client: { address: "192.0.2.7", helo: "mx.example.org" },
    protocol: "ESMTP",
    size,
    ...extra,
  };
}

async function withSpool(fn: (spool: Spool, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  try {
    const spool = new Spool(dir);
    await spool.init();
    await fn(spool, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function store(spool: Spool, content: Uint8Array, chunk = 1000): Promise<string> {
  const w = await spool.begin();
  for (let i = 0; i < content.length; i += chunk) await w.write(content.subarray(i, i + chunk));
  await w.commit(envelope(w.id, content.length));
  return w.id;
}

/** The text of a sealed spool file with its CRC-32 computed again (after an edit). */
function resealText(text: string): string {
  return dec.decode(reseal(enc.encode(text)));
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const MESSAGE = enc.encode("Subject: hi\r\n\r\nHello\r\n");

Deno.test("begin, write, commit, list, load, content, append, remove", async () => {
  await withSpool(async (spool, dir) => {
    assert.deepEqual(await spool.list(), []);
    const id = await store(spool, MESSAGE, 5);
    assert.ok(isQueueId(id));
    assert.deepEqual(await spool.list(), [id]);
    assert.equal(spool.path(id), `${dir}/queue/${id}`);
    assert.deepEqual([...Deno.readDirSync(`${dir}/incoming`)], []);

    const state = await spool.load(id);
    assert.deepEqual(state.envelope, envelope(id, MESSAGE.length));
    assert.deepEqual(state.recipients.map((r) => r.status), ["pending", "pending"]);

    const { stream, length } = await spool.content(id);
    assert.equal(length, MESSAGE.length);
    assert.deepEqual(await readAll(stream), MESSAGE);

    await spool.append(id, [
      { t: "deferred", rcpt: 0, at: 1, until: 5000, dsn: "4.4.1", text: "Timeout" },
      { t: "delivered", rcpt: 1, at: 2, dsn: "2.0.0", text: "250 Ok", relay: "mx.example.com" },
    ]);
    await spool.append(id, []);
    await spool.append(id, [
      { t: "delivered", rcpt: 0, at: 5001, dsn: "2.0.0", text: "250 Ok", relay: "mx.example.net" },
    ]);
    const after = await spool.load(id);
    assert.equal(after.done, true);
    assert.deepEqual(after.recipients.map((r) => [r.status, r.attempts]), [
      ["delivered", 1],
      ["delivered", 0],
    ]);
    // Appending never disturbs the content.
    assert.deepEqual(await readAll((await spool.content(id)).stream), MESSAGE);

    await spool.remove(id);
    await spool.remove(id); // NotFound is fine
    assert.deepEqual(await spool.list(), []);
    await assert.rejects(() => spool.load(id), Deno.errors.NotFound);
  });
});

Deno.test("an operator can cat the file: header, content, one JSON record per line", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, MESSAGE);
    await spool.append(id, [{ t: "failed", rcpt: 1, at: 3, dsn: "5.1.1", text: "No such user" }]);
    const text = await Deno.readTextFile(spool.path(id));
    const lines = text.split("\n");
    // Written in one piece, so sealed (format 2): the CRC-32 covers header, content, envelope.
    const head = `skiff-spool 2 content=${String(SEALED_HEADER_LENGTH).padStart(12, "0")} length=${
      String(MESSAGE.length).padStart(12, "0")
    } journal=${String(SEALED_HEADER_LENGTH + MESSAGE.length).padStart(12, "0")}`;
    assert.match(lines[0], new RegExp(`^${head} crc32=[0-9a-f]{8}$`));
    assert.equal(lines[0].length + 1, SEALED_HEADER_LENGTH);
    assert.ok(text.includes('Subject: hi\r\n\r\nHello\r\n{"t":"envelope","id":"' + id));
    const journal = lines.slice(-3);
    assert.equal(JSON.parse(journal[0]).t, "envelope");
    assert.deepEqual(JSON.parse(journal[1]), {
      t: "failed",
      rcpt: 1,
      at: 3,
      dsn: "5.1.1",
      text: "No such user",
    });
    assert.equal(journal[2], "");
  });
});

Deno.test("content without a final newline or empty gets a readable journal", async () => {
  await withSpool(async (spool) => {
    for (const body of [enc.encode("no newline"), new Uint8Array(0), enc.encode("\n")]) {
      const id = await store(spool, body);
      const raw = await Deno.readFile(spool.path(id));
      const h = parseHeader(raw);
      assert.equal(h.length, body.length);
      assert.equal(dec.decode(raw.subarray(h.journal)).split("\n").length, 2);
      assert.deepEqual(await readAll((await spool.content(id)).stream), body);
      assert.equal((await spool.load(id)).envelope.size, body.length);
    }
  });
});

Deno.test("an empty write leaves the writer usable (a milter's message starts a held write)", async () => {
  await withSpool(async (spool) => {
    const w = await spool.begin();
    await w.write(new Uint8Array(0));
    await w.write(MESSAGE);
    await w.commit(envelope(w.id, MESSAGE.length));
    assert.deepEqual(await readAll((await spool.content(w.id)).stream), MESSAGE);
  });
});

Deno.test("a 5 MB message streams in and out byte for byte", async () => {
  await withSpool(async (spool) => {
    const big = new Uint8Array(5 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i += 65536) {
      crypto.getRandomValues(big.subarray(i, Math.min(big.length, i + 65536)));
    }
    const w = await spool.begin();
    // Uneven chunks, and the caller reuses its buffer between writes.
    const scratch = new Uint8Array(70_001);
    for (let i = 0; i < big.length;) {
      const n = Math.min(big.length - i, 1 + (i % 70_000));
      scratch.set(big.subarray(i, i + n));
      await w.write(scratch.subarray(0, n));
      scratch.fill(0);
      i += n;
    }
    assert.equal(w.length, big.length);
    await w.commit(envelope(w.id, big.length));
    const { stream, length } = await spool.content(w.id);
    assert.equal(length, big.length);
    let chunks = 0;
    let max = 0;
    const got = new Uint8Array(big.length);
    let off = 0;
    for await (const c of stream) {
      got.set(c, off);
      off += c.length;
      chunks++;
      max = Math.max(max, c.length);
    }
    assert.equal(off, big.length);
    assert.ok(chunks > 50 && max <= 64 * 1024, `${chunks} chunks of at most ${max}`);
    assert.deepEqual(got, big);
    assert.equal((await spool.load(w.id)).envelope.size, big.length);
  });
});

Deno.test("a cancelled content stream releases the file", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, new Uint8Array(300_000).fill(65));
    const { stream } = await spool.content(id);
    const reader = stream.getReader();
    assert.equal((await reader.read()).value?.length, 64 * 1024);
    await reader.cancel();
  });
});

Deno.test("init removes half-received files; incoming/ is never listed", async () => {
  await withSpool(async (spool, dir) => {
    const kept = await store(spool, MESSAGE);
    const w1 = await spool.begin();
    await w1.write(new Uint8Array(100_000)); // flushed: placeholder header on disk
    const w2 = await spool.begin();
    await w2.write(MESSAGE); // still in memory: no file yet
    await Deno.writeTextFile(`${dir}/incoming/notes.txt`, "operator's file");
    assert.deepEqual(await spool.list(), [kept]);
    const head = await Deno.readFile(`${dir}/incoming/${w1.id}`);
    assert.throws(() => parseHeader(head), /no valid header/);

    // A restart: the writers' process is gone.
    const again = new Spool(dir);
    assert.deepEqual(await again.init(), { removedPartials: 1 });
    assert.deepEqual([...Deno.readDirSync(`${dir}/incoming`)].map((e) => e.name), ["notes.txt"]);
    assert.deepEqual(await again.list(), [kept]);
    await w1.abort();
    await w2.abort();
  });
});

Deno.test("abort deletes the partial; nothing works after commit or abort", async () => {
  await withSpool(async (spool, dir) => {
    const w = await spool.begin();
    await w.write(MESSAGE);
    await w.abort();
    await w.abort();
    assert.deepEqual([...Deno.readDirSync(`${dir}/incoming`)], []);
    await assert.rejects(() => w.write(MESSAGE), /after closed/);
    await assert.rejects(() => w.commit(envelope(w.id, MESSAGE.length)), /after closed/);

    const c = await spool.begin();
    await c.commit(envelope(c.id, 0));
    await c.abort(); // no-op after commit
    assert.deepEqual(await spool.list(), [c.id]);
    await assert.rejects(() => c.write(MESSAGE), /after committed/);
  });
});

Deno.test("commit refuses a mismatched envelope and leaves nothing behind", async () => {
  await withSpool(async (spool, dir) => {
    const a = await spool.begin();
    await a.write(MESSAGE);
    await assert.rejects(() => a.commit(envelope(a.id, 3)), /Envelope size 3 does not match/);
    const b = await spool.begin();
    await assert.rejects(() => b.commit(envelope(newQueueId(), 0)), /Envelope id/);
    const c = await spool.begin();
    await assert.rejects(
      () => c.commit({ ...envelope(c.id, 0), received: NaN }),
      /bad received/,
    );
    assert.deepEqual([...Deno.readDirSync(`${dir}/incoming`)], []);
    assert.deepEqual(await spool.list(), []);
  });
});

Deno.test("an envelope with CR/LF in a field is refused at commit and leaves nothing", async () => {
  await withSpool(async (spool, dir) => {
    const w = await spool.begin();
    const evil = 'x\r\n{"t":"delivered","rcpt":0}\nQUIT\r\n';
    await assert.rejects(() => w.commit(envelope(w.id, 0, { from: evil })), /Bad envelope from:/);
    assert.deepEqual([...Deno.readDirSync(`${dir}/incoming`)], []);
    assert.deepEqual(await spool.list(), []);
  });
});

Deno.test("a hand-edited envelope is a SpoolCorruptError naming the field; quarantine keeps it", async () => {
  await withSpool(async (spool, dir) => {
    const id = await store(spool, MESSAGE);
    const path = spool.path(id);
    const before = await Deno.readTextFile(path);
    const after = before.replace('"notify":["FAILURE"]', '"notify":["SUCCESS\\r\\nRSET"]');
    assert.notEqual(after, before);
    await Deno.writeTextFile(path, after);
    // The file is sealed: the edit breaks its CRC, so it can never be delivered as it stands.
    await assert.rejects(() => spool.load(id), (e: Error) => {
      assert.ok(e instanceof SpoolCorruptError);
      assert.equal(e.name, "SpoolTornError");
      assert.match(e.message, /fails its seal \(its CRC-32 does not match\)/);
      return true;
    });
    // Sealed again (as a tool that rewrites a file would), the envelope check names the field.
    await Deno.writeTextFile(path, resealText(after));
    await assert.rejects(() => spool.load(id), (e: Error) => {
      assert.equal(e.name, "SpoolCorruptError");
      assert.match(e.message, /Bad envelope recipient 1 NOTIFY: "SUCCESS\\r\\nRSET" \(501 5\.5\.2/);
      return true;
    });
    const moved = await spool.quarantine(id);
    assert.equal(moved, `${dir}/quarantine/${id}`);
    assert.deepEqual(await spool.list(), []);
    assert.equal(await Deno.readTextFile(moved), resealText(after));
  });
});

Deno.test("an append after a torn write repairs the line and the journal stays readable", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, MESSAGE);
    // A crash in the middle of an append's write.
    const f = await Deno.open(spool.path(id), { append: true });
    await f.write(enc.encode('{"t":"delivered","rcpt":0,"at":1,"dsn":"2.0'));
    f.close();
    assert.deepEqual((await spool.load(id)).recipients.map((r) => r.status), [
      "pending",
      "pending",
    ]);
    await spool.append(id, [{ t: "failed", rcpt: 1, at: 9, dsn: "5.1.1", text: "Unknown" }]);
    const state = await spool.load(id);
    assert.deepEqual(state.recipients.map((r) => r.status), ["pending", "failed"]);
    const text = await Deno.readTextFile(spool.path(id));
    assert.ok(text.includes('"dsn":"2.0' + TORN_MARK + "\n"));
  });
});

Deno.test("a corrupt record in the middle of a journal is an error naming the file", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, MESSAGE);
    const f = await Deno.open(spool.path(id), { append: true });
    await f.write(enc.encode("oops\n"));
    f.close();
    await spool.append(id, [{ t: "failed", rcpt: 1, at: 9, dsn: "5.1.1", text: "Unknown" }]);
    await assert.rejects(() => spool.load(id), new RegExp(`Spool file ${id}: Journal line 2`));
  });
});

Deno.test("invalid ids are rejected everywhere and skipped in list", async () => {
  await withSpool(async (spool, dir) => {
    for (const bad of ["", "../../etc/passwd", "abc", "0123456789abcdefg", "0123456789ABCDEF/"]) {
      assert.equal(isQueueId(bad), false);
      assert.throws(() => spool.path(bad), /Invalid queue id/);
      await assert.rejects(() => spool.begin(bad), /Invalid queue id/);
      await assert.rejects(() => spool.load(bad), /Invalid queue id/);
      await assert.rejects(() => spool.content(bad), /Invalid queue id/);
      await assert.rejects(() => spool.append(bad, []), /Invalid queue id/);
      await assert.rejects(() => spool.remove(bad), /Invalid queue id/);
    }
    await Deno.writeTextFile(`${dir}/queue/README`, "x");
    await Deno.writeTextFile(`${dir}/queue/0123456789ABCDEFG.tmp`, "x");
    await Deno.mkdir(`${dir}/queue/0123456789ABCDEFG`);
    assert.deepEqual(await spool.list(), []);
  });
});

Deno.test("begin with an id in use fails (O_EXCL)", async () => {
  await withSpool(async (spool) => {
    const id = newQueueId();
    const w = await spool.begin(id);
    await assert.rejects(() => spool.begin(id), Deno.errors.AlreadyExists);
    await w.abort();
  });
});

Deno.test("a file that is not a spool file is reported as such", async () => {
  await withSpool(async (spool, dir) => {
    const id = newQueueId();
    await Deno.writeTextFile(`${dir}/queue/${id}`, "hello\n");
    await assert.rejects(() => spool.load(id), /no valid header/);
    await assert.rejects(() => spool.content(id), /no valid header/);
    await assert.rejects(() =>
      spool.append(id, [
        { t: "failed", rcpt: 0, at: 1, dsn: "5.0.0", text: "x" },
      ]), /too short/);
  });
});

Deno.test("newQueueId: format, uniqueness, time order", async () => {
  const ids = Array.from({ length: 20_000 }, () => newQueueId());
  for (const id of ids.slice(0, 100)) {
    assert.equal(id.length, QUEUE_ID_LENGTH);
    assert.match(id, /^[0-9A-HJKMNP-TV-Z]{17}$/);
    assert.ok(isQueueId(id));
  }
  assert.equal(new Set(ids).size, ids.length);
  const times = ids.map((id) => id.slice(0, 12));
  assert.deepEqual(times, times.toSorted());
  await new Promise((r) => setTimeout(r, 3));
  assert.ok(newQueueId() > ids[ids.length - 1]);
});

Deno.test("load, content and append work from another process", async () => {
  await withSpool(async (spool, dir) => {
    const id = await store(spool, MESSAGE);
    const mod = new URL("../lib/spool/mod.ts", import.meta.url).href;
    const code = `
      import { Spool } from ${JSON.stringify(mod)};
      const spool = new Spool(Deno.args[0]);
      const id = Deno.args[1];
      const state = await spool.load(id);
      const body = await new Response((await spool.content(id)).stream).text();
      await spool.append(id, [{ t: "delivered", rcpt: 0, at: 7, dsn: "2.0.0", text: "250 Ok",
        relay: "local" }]);
      console.log(JSON.stringify({ from: state.envelope.from, body }));
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code, dir, id],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    assert.deepEqual(JSON.parse(dec.decode(out.stdout)), {
      from: "alice@example.org",
      body: dec.decode(MESSAGE),
    });
    assert.deepEqual((await spool.load(id)).recipients.map((r) => r.status), [
      "delivered",
      "pending",
    ]);
  });
});

Deno.test("concurrent commits coalesce their directory fsyncs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  try {
    const syncer = new DirSyncer();
    const spool = new Spool(dir, { dirSyncer: syncer, sync: "fdatasync" });
    await spool.init();
    const ids = await Promise.all(Array.from({ length: 20 }, () => store(spool, MESSAGE)));
    assert.deepEqual(await spool.list(), ids.toSorted());
    assert.ok(syncer.syncs < 20, `${syncer.syncs} fsyncs`);

    const plain = new DirSyncer({ coalesce: false });
    await Promise.all(Array.from({ length: 5 }, () => plain.sync(dir)));
    assert.equal(plain.syncs, 5);
    const joined = new DirSyncer();
    await Promise.all(Array.from({ length: 5 }, () => joined.sync(dir)));
    assert.equal(joined.syncs, 2); // the one running and one follow-up for all the rest
    await assert.rejects(() => joined.sync(`${dir}/missing`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileDurably replaces a file atomically", async () => {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  try {
    await writeFileDurably(`${dir}/state`, enc.encode("one"));
    await writeFileDurably(`${dir}/state`, enc.encode("two"));
    assert.equal(await Deno.readTextFile(`${dir}/state`), "two");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["state"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kill -9 mid-DATA and after commit: restart keeps exactly the committed message", async () => {
  await withSpool(async (_spool, dir) => {
    const mod = new URL("../lib/spool/mod.ts", import.meta.url).href;
    const code = `
      import { Spool } from ${JSON.stringify(mod)};
      const spool = new Spool(Deno.args[0]);
      const done = await spool.begin();
      await done.write(new Uint8Array(100).fill(66));
      await done.commit({ id: done.id, from: "", recipients: [{ address: "x@example.org" }],
        received: 1, client: { address: "", helo: "" }, protocol: "SMTP", size: 100 });
      const partial = await spool.begin();
      await partial.write(new Uint8Array(200_000).fill(65));
      console.log(done.id);
      await new Promise(() => setInterval(() => {}, 1000)); // wait to be killed
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code, dir],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    const first = await reader.read();
    const committed = dec.decode(first.value).trim();
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    assert.equal([...Deno.readDirSync(`${dir}/incoming`)].length, 1);

    const restarted = new Spool(dir);
    assert.deepEqual(await restarted.init(), { removedPartials: 1 });
    assert.deepEqual(await restarted.list(), [committed]);
    const state = await restarted.load(committed);
    assert.deepEqual(state.recipients.map((r) => r.status), ["pending"]);
    assert.deepEqual(
      await readAll((await restarted.content(committed)).stream),
      new Uint8Array(100).fill(66),
    );
  });
});

Deno.test("syncfs group commit: concurrent sealed commits share one sync after their renames", async () => {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  try {
    const spool = new Spool(dir);
    await spool.init();
    const ids = await Promise.all(Array.from({ length: 20 }, () => store(spool, MESSAGE)));
    assert.deepEqual(await spool.list(), ids.toSorted());
    const s = spool.syncs;
    assert.equal(s.mode, "syncfs");
    // Sealed messages need no sync before the rename: one shared syncfs after it commits them.
    assert.equal(s.data, 0, `${s.data} data syncs for 20 sealed commits`);
    assert.ok(s.dir >= 1 && s.dir < 20, `${s.dir} rename syncs for 20 commits`);
    for (const id of ids) assert.equal((await spool.load(id)).envelope.id, id);
    assert.deepEqual([...Deno.readDirSync(`${dir}/incoming`)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadWithContent gives a sealed message's content from the read that got its journal; a big one's is null", async () => {
  await withSpool(async (spool) => {
    const small = await store(spool, MESSAGE);
    await spool.append(small, [
      { t: "deferred", rcpt: 0, at: 1, until: 2, dsn: "4.4.1", text: "later" },
    ]);
    const got = await spool.loadWithContent(small);
    assert.deepEqual(got.content, MESSAGE);
    assert.deepEqual(got.state, await spool.load(small));
    assert.equal(got.state.recipients[0].attempts, 1);
    const big = new Uint8Array(200 * 1024).fill(0x61);
    const id = await store(spool, big, 65536);
    const bigLoad = await spool.loadWithContent(id);
    assert.equal(bigLoad.content, null);
    assert.equal(bigLoad.state.envelope.size, big.length);
  });
});

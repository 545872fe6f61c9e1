/**
 * The single-sync commit (docs/spool.md, "Durability sequence"): a message
 * written in one piece is sealed with a CRC-32 and committed by one sync
 * after its rename, so a power loss before that sync can leave in queue/ a
 * file that is short, zero-filled or holding stale blocks. Such a file never
 * got a 250; load() must tell it from a committed one and never return a
 * wrong message. Power loss is simulated by cutting and overwriting a real
 * committed file the way a lost write would. Also: deferrals alone are not
 * synced, results are; a spool written by the previous version (format 1,
 * tests/fixtures/spool_v1, made by commit 9aa5ffa's Spool) still works; and
 * a running server delivers an old spool, delivers a sealed file and moves
 * a torn one out of the queue with a log line.
 */
import assert from "node:assert/strict";
import {
  type Envelope,
  HEADER_LENGTH,
  parseHeader,
  SEALED_HEADER_LENGTH,
  Spool,
  SpoolCorruptError,
  SpoolTornError,
} from "../lib/spool/mod.ts";
import { JournalWriter } from "../lib/spool/journal_writer.ts";
import { SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const FIXTURE = new URL("./fixtures/spool_v1/queue/", import.meta.url).pathname;
/** The fixture's two messages (format 1), as the previous version wrote them. */
const V1_DEFERRED = "D26YGR4BG000FFYE3";
const V1_TORN_TAIL = "D26YGR5300009HV1Z";

function envelope(id: string, size: number, to = "bob@example.net"): Envelope {
  return {
    id,
    from: "alice@example.org",
    recipients: [{ address: to }],
    received: Date.now(),
    client: { address: "192.0.2.7", helo: "mx.example.org" },
    protocol: "ESMTP",
    size,
  };
}

async function store(spool: Spool, body: string, to?: string): Promise<string> {
  const w = await spool.begin();
  const bytes = enc.encode(body);
  await w.write(bytes);
  await w.commit(envelope(w.id, bytes.length, to));
  return w.id;
}

async function withSpool(fn: (spool: Spool, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "spool_seal_test_" });
  try {
    const spool = new Spool(dir);
    await spool.init();
    await fn(spool, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** End of the envelope line (the first journal line) of a spool file's bytes. */
function envelopeEnd(bytes: Uint8Array): number {
  return bytes.indexOf(10, parseHeader(bytes).journal) + 1;
}

/** load() of `bytes` put in place of message `id`: its state, or the error it threw. */
async function loadAs(spool: Spool, id: string, bytes: Uint8Array) {
  await Deno.writeFile(spool.path(id), bytes);
  try {
    return await spool.load(id);
  } catch (e) {
    return e as Error;
  }
}

const BODY = "Subject: sealed\r\n\r\n" + "line of the body\r\n".repeat(60);

Deno.test("a message that fits the buffer is sealed (format 2), a streamed one is format 1", async () => {
  await withSpool(async (spool) => {
    const small = await store(spool, BODY);
    const raw = await Deno.readFile(spool.path(small));
    assert.equal(dec.decode(raw.subarray(0, 14)), "skiff-spool 2 ");
    const h = parseHeader(raw);
    assert.equal(h.content, SEALED_HEADER_LENGTH);
    assert.equal(typeof h.crc32, "number");
    const before = spool.syncs;
    const big = await store(spool, "Subject: big\r\n\r\n" + "x".repeat(100_000) + "\r\n");
    const head = parseHeader(await Deno.readFile(spool.path(big)));
    assert.equal(head.content, HEADER_LENGTH);
    assert.equal(head.crc32, undefined);
    // Streamed: its data is synced before the rename, as before.
    assert.equal(spool.syncs.data, before.data + 1);
  });
});

Deno.test("a sealed file cut at any byte before its envelope line ends is torn, never a wrong message", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, BODY);
    const whole = await Deno.readFile(spool.path(id));
    const end = envelopeEnd(whole);
    for (let cut = 0; cut <= whole.length; cut++) {
      const got = await loadAs(spool, id, whole.subarray(0, cut));
      if (cut < end) {
        assert.ok(got instanceof SpoolTornError, `cut at ${cut}: ${got}`);
      } else {
        assert.ok(!(got instanceof Error), `cut at ${cut}: ${got}`);
        assert.equal(got.envelope.id, id);
        assert.equal(got.envelope.size, BODY.length);
      }
    }
  });
});

Deno.test("a sealed file with a lost or stale 512-byte sector before its envelope ends is torn", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, BODY);
    // Another message of the same size whose every content line differs: its blocks are "stale".
    const other = await store(spool, BODY.toUpperCase());
    const whole = await Deno.readFile(spool.path(id));
    const stale = await Deno.readFile(spool.path(other));
    const end = envelopeEnd(whole);
    for (let at = 0; at < whole.length; at += 512) {
      for (const [what, fill] of [["zeros", null], ["stale", stale]] as const) {
        const bytes = whole.slice();
        const sector = fill ? fill.subarray(at, at + 512) : new Uint8Array(512);
        bytes.set(sector.subarray(0, Math.min(512, bytes.length - at)), at);
        const got = await loadAs(spool, id, bytes);
        if (at < end) {
          assert.ok(got instanceof SpoolTornError, `${what} at ${at}: ${got}`);
        } else {
          assert.ok(!(got instanceof Error) && got.envelope.id === id, `${what} at ${at}: ${got}`);
        }
      }
    }
  });
});

Deno.test("a torn file is a SpoolCorruptError (quarantined, never delivered); a valid one is kept", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, BODY);
    const whole = await Deno.readFile(spool.path(id));
    const torn = await loadAs(spool, id, whole.subarray(0, whole.length - 40));
    assert.ok(torn instanceof SpoolCorruptError);
    assert.match(String(torn), /fails its seal \(its envelope line is incomplete\).*never/);
    const zero = await loadAs(spool, id, new Uint8Array(whole.length));
    assert.match(String(zero), /SpoolTornError: .*is zero-filled: torn by a crash/);
    const empty = await loadAs(spool, id, new Uint8Array(0));
    assert.match(String(empty), /SpoolTornError: .*is empty/);
    // The intact file: loads, streams, takes results (the seal does not cover the journal after
    // the envelope line), and reloads.
    await Deno.writeFile(spool.path(id), whole);
    const content = await new Response((await spool.content(id)).stream).text();
    assert.equal(content, BODY);
    await spool.append(id, [{ t: "deferred", rcpt: 0, at: 1, until: 2, dsn: "4.4.1", text: "x" }]);
    const j = await JournalWriter.open(spool.path(id), id);
    await j.append([{ t: "delivered", rcpt: 0, at: 3, dsn: "2.0.0", text: "250 OK", relay: "x" }]);
    await j.close();
    const state = await spool.load(id);
    assert.equal(state.recipients[0].status, "delivered");
    assert.equal(state.recipients[0].attempts, 1);
  });
});

Deno.test("an unsynced deferral lost in a power loss (zeros) is skipped, later records still count", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, BODY);
    // Two deferrals were appended without a sync; the first one's block never reached the disk,
    // the second one's did, so a "line" holds zeros and the second deferral's tail.
    const lost = new Uint8Array(300);
    const tail = enc.encode('"at":2,"until":3,"dsn":"4.4.1","text":"x"}\n');
    const delivered = enc.encode(
      '{"t":"delivered","rcpt":0,"at":4,"dsn":"2.0.0","text":"250 OK","relay":"x"}\n',
    );
    const f = await Deno.open(spool.path(id), { append: true });
    for (const b of [lost, tail, delivered]) await f.write(b);
    f.close();
    const state = await spool.load(id);
    assert.equal(state.recipients[0].status, "delivered");
    assert.equal(state.recipients[0].attempts, 0);
    assert.ok(state.done);
  });
});

/** Counts fdatasyncs (FsFile.syncData) made while `fn` runs. */
async function countSyncData(fn: () => Promise<void>): Promise<number> {
  const proto = Deno.FsFile.prototype;
  const orig = proto.syncData;
  let n = 0;
  proto.syncData = function (this: Deno.FsFile) {
    n++;
    return orig.call(this);
  };
  try {
    await fn();
  } finally {
    proto.syncData = orig;
  }
  return n;
}

Deno.test("deferrals alone are written without a sync; delivered, failed and notified ones are synced", async () => {
  await withSpool(async (spool) => {
    const id = await store(spool, BODY);
    const deferred = { t: "deferred", rcpt: 0, at: 1, until: 2, dsn: "4.4.1", text: "x" } as const;
    // Spool.append (syncfs mode): counted by the shared syncs.
    const before = spool.syncs.data;
    await spool.append(id, [deferred]);
    assert.equal(spool.syncs.data, before);
    await spool.append(id, [{ t: "notified", rcpt: 0, at: 3, action: "delayed", id }]);
    assert.equal(spool.syncs.data, before + 1);
    // The journal writer of a delivery pass: fdatasync.
    const j = await JournalWriter.open(spool.path(id), id);
    assert.equal(await countSyncData(() => j.append([deferred, deferred])), 0);
    assert.equal(
      await countSyncData(() =>
        j.append([deferred, { t: "failed", rcpt: 0, at: 4, dsn: "5.1.1", text: "No" }])
      ),
      1,
    );
    await j.close();
    assert.equal((await spool.load(id)).recipients[0].attempts, 4);
  });
  // fdatasync mode: Spool.append syncs the file itself.
  const dir = await Deno.makeTempDir({ prefix: "spool_seal_test_" });
  try {
    const spool = new Spool(dir, { sync: "fdatasync" });
    await spool.init();
    const id = await store(spool, BODY);
    const deferred = { t: "deferred", rcpt: 0, at: 1, until: 2, dsn: "4.4.1", text: "x" } as const;
    assert.equal(await countSyncData(() => spool.append(id, [deferred])), 0);
    const delivered = { t: "delivered", rcpt: 0, at: 5, dsn: "2.0.0", text: "ok", relay: "x" };
    assert.equal(await countSyncData(() => spool.append(id, [delivered as never])), 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Copies the format-1 fixture into `queue`, with `received` set to now if asked. */
async function plantV1(queue: string, fresh: boolean): Promise<void> {
  for (const id of [V1_DEFERRED, V1_TORN_TAIL]) {
    let text = await Deno.readTextFile(FIXTURE + id);
    // Same digit count, so the header's offsets still hold (the journal comes last).
    if (fresh) text = text.replace('"received":1700000000000', `"received":${Date.now()}`);
    await Deno.writeTextFile(`${queue}/${id}`, text, { mode: 0o600 });
  }
}

Deno.test("a spool written by the previous version (format 1) loads, streams and takes appends", async () => {
  await withSpool(async (spool, dir) => {
    await plantV1(`${dir}/queue`, false);
    assert.deepEqual(await spool.list(), [V1_DEFERRED, V1_TORN_TAIL]);
    const a = await spool.load(V1_DEFERRED);
    assert.equal(a.recipients[0].status, "deferred");
    assert.equal(a.recipients[0].attempts, 1);
    assert.equal(a.nextAttempt, 1_700_000_301_000);
    const text = (id: string) => spool.content(id).then((c) => new Response(c.stream).text());
    assert.equal(await text(V1_DEFERRED), "Subject: v1 first\r\n\r\nold-format-one\r\n");
    const b = await spool.load(V1_TORN_TAIL);
    // The torn last line the fixture ends in is ignored, as before.
    assert.deepEqual(b.recipients.map((r) => r.status), ["pending", "delivered"]);
    assert.equal(await text(V1_TORN_TAIL), "Subject: v1 second\r\n\r\nold-format-two");
    await spool.append(V1_TORN_TAIL, [{
      t: "delivered",
      rcpt: 0,
      at: 5,
      dsn: "2.0.0",
      text: "250 OK",
      relay: "x",
    }]);
    assert.ok((await spool.load(V1_TORN_TAIL)).done);
    // A new message beside them is sealed; both formats live in one queue.
    const id = await store(spool, BODY);
    assert.equal((await spool.load(id)).envelope.id, id);
  });
});

peerTest(
  "upgrade and recovery: old-format messages are delivered, a sealed one too, a torn one is moved out and logged",
  [PEERS.smtpSink],
  async () => {
    const sink = await Sink.start();
    const dir = await Deno.makeTempDir({ prefix: "skiff-seal-" });
    let server: SkiffServer | null = null;
    try {
      const spool = new Spool(`${dir}/spool`);
      await spool.init();
      await plantV1(`${dir}/spool/queue`, true);
      const good = await store(spool, "Subject: g\r\n\r\nsealed-token\r\n", "erin@example.net");
      const torn = await store(spool, "Subject: t\r\n\r\ntorn-token\r\n", "frank@example.net");
      // What a power loss before the commit's sync can leave: the rename but not all the data.
      const bytes = await Deno.readFile(spool.path(torn));
      await Deno.writeFile(spool.path(torn), bytes.subarray(0, bytes.length - 30));
      server = await SkiffServer.start({
        dir,
        toml: `[relay]\nrelayhost = "127.0.0.1:${sink.port}"\n`,
      });
      await waitFor(
        async () => {
          const all = (await sink.messages()).join("\n");
          return ["old-format-one", "old-format-two", "sealed-token"].every((t) => all.includes(t));
        },
        30_000,
        "the old-format and sealed messages at the sink",
      );
      await server.waitForLog(/queue file quarantined/);
      assert.match(server.log, new RegExp(`queue file quarantined.*${torn}.*fails its seal`));
      const all = await sink.messages();
      assert.ok(!all.some((m) => m.includes("torn-token")), "the torn message was delivered");
      // dave@ had its delivered record in the old journal: not sent again.
      assert.ok(!all.some((m) => m.includes("dave@example.com")));
      assert.equal(all.filter((m) => m.includes("old-format-two")).length, 1);
      await waitFor(async () => (await spool.list()).length === 0, 20_000, "an empty queue");
      assert.ok(!(await spool.list()).includes(good));
      assert.deepEqual([...Deno.readDirSync(`${dir}/spool/quarantine`)].map((e) => e.name), [torn]);
    } finally {
      await server?.stop();
      await sink.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

/**
 * Maildir delivery on a real temporary directory: the file holds the trace
 * headers and the body with LF line endings, names stay unique under load,
 * bad mailbox names fail permanently, failures leave nothing in tmp/ or new/,
 * and the CRLF-to-LF conversion is right however the stream is chunked.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { deliverToMaildir, maildirName } from "../lib/deliver/maildir.ts";
import { CrlfToLf } from "../lib/deliver/crlf.ts";
import { DeliveryError, fsDeliveryError } from "../lib/mail/delivery_error.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A stream yielding the given chunks. */
function streamOf(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const parts = chunks.map((c) => typeof c === "string" ? enc.encode(c) : c);
  return new ReadableStream({
    pull(ctl) {
      const next = parts.shift();
      if (next) ctl.enqueue(next);
      else ctl.close();
    },
  });
}

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "skiff-maildir-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

function deliver(root: string, content: ReadableStream<Uint8Array>, user = "alice") {
  return deliverToMaildir({
    root,
    user,
    returnPath: "bob@example.org",
    deliveredTo: `${user}@localhost`,
    hostname: "mx.example.org",
    content,
  });
}

Deno.test("delivers headers then the exact body with LF line endings", async () => {
  await withRoot(async (root) => {
    const msg = "Subject: hi\r\nFrom: bob@example.org\r\n\r\nline one\r\nbare\rcr\r\n..dot\r\n";
    const path = await deliverToMaildir({
      root,
      user: "Alice",
      returnPath: "bob@example.org",
      deliveredTo: "Alice@localhost",
      hostname: "mx.example.org",
      content: streamOf(msg.slice(0, 20), msg.slice(20, 37), msg.slice(37)),
    });
    assert.ok(path.startsWith(`${root}/alice/new/`), path);
    assert.equal(
      await Deno.readTextFile(path),
      "Return-Path: <bob@example.org>\nDelivered-To: Alice@localhost\n" +
        "Subject: hi\nFrom: bob@example.org\n\nline one\nbare\rcr\n..dot\n",
    );
    for (const sub of ["tmp", "new", "cur"]) {
      const st = await Deno.stat(`${root}/alice/${sub}`);
      assert.ok(st.isDirectory);
      assert.equal(st.mode! & 0o777, 0o700, sub);
    }
    assert.equal((await Deno.stat(`${root}/alice`)).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual(await names(`${root}/alice/tmp`), []);
  });
});

Deno.test("the null sender is written as <>, and names follow the Maildir spec", async () => {
  await withRoot(async (root) => {
    const path = await deliverToMaildir({
      root: `${root}/deep/er`,
      user: "postmaster",
      returnPath: "",
      deliveredTo: "postmaster@localhost",
      hostname: "odd/host:name",
      content: streamOf("\r\n"),
    });
    assert.equal(
      await Deno.readTextFile(path),
      "Return-Path: <>\nDelivered-To: postmaster@localhost\n\n",
    );
    const name = path.slice(path.lastIndexOf("/") + 1);
    assert.match(name, /^\d{10,}\.M\d{1,6}P\d+Q\d+R[0-9a-f]{16}\.odd\\057host\\072name$/);
  });
  assert.notEqual(maildirName("h"), maildirName("h"));
});

Deno.test("1000 rapid deliveries get 1000 unique names", async () => {
  await withRoot(async (root) => {
    const paths: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const done = await Promise.all(
        Array.from({ length: 100 }, (_, i) => deliver(root, streamOf(`n: ${batch * 100 + i}\r\n`))),
      );
      paths.push(...done);
    }
    assert.equal(new Set(paths).size, 1000);
    const files = await names(`${root}/alice/new`);
    assert.equal(files.length, 1000);
    assert.deepEqual(await names(`${root}/alice/tmp`), []);
    const bodies = new Set(
      await Promise.all(files.map((f) => Deno.readTextFile(`${root}/alice/new/${f}`))),
    );
    assert.equal(bodies.size, 1000);
  });
});

Deno.test("bad user names are refused permanently with 5.1.1, creating nothing", async () => {
  await withRoot(async (root) => {
    const bad = [
      "",
      ".",
      "..",
      "/",
      "a/b",
      "../etc",
      "a\0b",
      "a\nb",
      "a\rb",
      "tab\t",
      "del\x7f",
      "c1\x85",
      "x".repeat(256),
    ];
    for (const user of bad) {
      await assert.rejects(deliver(root, streamOf("x\r\n"), user), (e: unknown) => {
        assert.ok(e instanceof DeliveryError, String(e));
        assert.equal(e.permanent, true);
        assert.equal(e.dsn, "5.1.1");
        assert.match(e.message, /^[A-Z]/);
        return true;
      }, JSON.stringify(user));
    }
    assert.deepEqual(await names(root), []);
    // Dots and odd characters inside a name are fine.
    await deliver(root, streamOf("x\r\n"), "first.last+tag");
    await deliver(root, streamOf("x\r\n"), "...");
    assert.deepEqual(await names(root), ["...", "first.last+tag"]);
  });
});

Deno.test("control characters in envelope addresses are refused permanently", async () => {
  await withRoot(async (root) => {
    await assert.rejects(
      deliverToMaildir({
        root,
        user: "a",
        returnPath: "x@y\r\nBcc: evil",
        deliveredTo: "a@localhost",
        hostname: "h",
        content: streamOf("x"),
      }),
      { name: "DeliveryError", permanent: true, dsn: "5.1.7" },
    );
    assert.deepEqual(await names(root), []);
  });
});

Deno.test("a failing content stream is a temporary error and leaves tmp/ and new/ empty", async () => {
  await withRoot(async (root) => {
    let sent = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent++ < 3) ctl.enqueue(enc.encode("partial line\r\n".repeat(10000)));
        else ctl.error(new Error("Spool read failed"));
      },
    });
    await assert.rejects(deliver(root, failing), (e: unknown) => {
      assert.ok(e instanceof DeliveryError);
      assert.equal(e.permanent, false);
      assert.match(e.dsn, /^4\./);
      return true;
    });
    assert.deepEqual(await names(`${root}/alice/tmp`), []);
    assert.deepEqual(await names(`${root}/alice/new`), []);
  });
});

Deno.test("a removed new/ is recreated", async () => {
  await withRoot(async (root) => {
    await deliver(root, streamOf("one\r\n"));
    await Deno.remove(`${root}/alice/new`, { recursive: true });
    const path = await deliver(root, streamOf("two\r\n"));
    assert.ok((await Deno.readTextFile(path)).endsWith("two\n"));
    assert.deepEqual(await names(`${root}/alice/tmp`), []);
  });
});

Deno.test("an unwritable maildir root is a temporary error", async () => {
  await withRoot(async (root) => {
    await Deno.writeTextFile(`${root}/file`, "not a directory");
    await assert.rejects(deliver(`${root}/file`, streamOf("x\r\n")), {
      name: "DeliveryError",
      permanent: false,
      dsn: "4.3.0",
    });
  });
});

Deno.test("file-system errors map to temporary status codes", async () => {
  let full: unknown;
  try {
    const f = await Deno.open("/dev/full", { write: true });
    try {
      await f.write(new Uint8Array(1));
    } finally {
      f.close();
    }
  } catch (e) {
    full = e;
  }
  if (full) assert.equal(fsDeliveryError(full, "Write").dsn, "4.3.1");
  const quota = Object.assign(new Error("Disk quota exceeded (os error 122)"), { code: "EDQUOT" });
  assert.equal(fsDeliveryError(quota, "Write").dsn, "4.2.2");
  const denied = new Deno.errors.PermissionDenied("Permission denied (os error 13)");
  const e = fsDeliveryError(denied, "Open");
  assert.equal(e.dsn, "4.2.0");
  assert.equal(e.permanent, false);
  assert.equal(e.message, "Open: Permission denied (os error 13)");
  assert.equal(fsDeliveryError(new Error("I/O error"), "Write").dsn, "4.3.0");
  assert.equal(new DeliveryError("Oops").dsn, "4.0.0");
  assert.equal(new DeliveryError("Gone", { permanent: true }).dsn, "5.0.0");
  assert.equal(new DeliveryError("Mixed", { permanent: true, dsn: "4.2.2" }).dsn, "5.2.2");
});

/** Reference conversion on a whole byte string: each CRLF pair, left to right, becomes LF. */
function reference(bytes: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10) continue;
    out.push(bytes[i]);
  }
  return out;
}

/** Bytes rich in CR and LF, and cut points splitting them into chunks. */
const chunked = fc.array(fc.constantFrom(13, 10, 13, 10, 46, 65, 0, 255), { maxLength: 200 })
  .chain((bytes) =>
    fc.tuple(
      fc.constant(bytes),
      fc.uniqueArray(fc.nat(bytes.length), { maxLength: 20 }).map((c) => c.sort((a, b) => a - b)),
    )
  );

function split(bytes: number[], cuts: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push(Uint8Array.from(bytes.slice(prev, c)));
    prev = c;
  }
  return out;
}

Deno.test("property: CRLF to LF is independent of chunking", () => {
  fc.assert(
    fc.property(chunked, ([bytes, cuts]) => {
      const conv = new CrlfToLf();
      const out: number[] = [];
      for (const chunk of split(bytes, cuts)) out.push(...conv.push(chunk));
      out.push(...conv.flush());
      assert.deepEqual(out, reference(bytes));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: delivered file is headers plus the converted body, however chunked", async () => {
  await withRoot(async (root) => {
    await fc.assert(
      fc.asyncProperty(chunked, async ([bytes, cuts]) => {
        const path = await deliver(root, streamOf(...split(bytes, cuts)));
        const file = await Deno.readFile(path);
        const head = enc.encode("Return-Path: <bob@example.org>\nDelivered-To: alice@localhost\n");
        assert.deepEqual(Array.from(file.subarray(0, head.length)), Array.from(head));
        assert.deepEqual(Array.from(file.subarray(head.length)), reference(bytes));
        await Deno.remove(path);
      }),
      { numRuns: 100 },
    );
    assert.deepEqual(await names(`${root}/alice/tmp`), []);
  });
});

Deno.test("large messages stream through the write buffer intact", async () => {
  await withRoot(async (root) => {
    const line = "0123456789".repeat(7) + "\r\n";
    const body = line.repeat(20000); // ~1.4 MB in uneven chunks
    const chunks: string[] = [];
    for (let i = 0; i < body.length; i += 70001) chunks.push(body.slice(i, i + 70001));
    const path = await deliver(root, streamOf(...chunks));
    const text = dec.decode(await Deno.readFile(path));
    assert.equal(
      text.slice(text.indexOf("\n", text.indexOf("Delivered-To")) + 1),
      body.replaceAll("\r\n", "\n"),
    );
  });
});

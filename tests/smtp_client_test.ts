/**
 * The SMTP client against scripted fake servers on loopback: exact bytes on
 * the wire for the happy path (dot-stuffing across chunk boundaries), the
 * per-recipient outcomes, and hostile or broken servers that must end in a
 * quick "deferred", never a crash, a hang or unbounded memory. The reply
 * parser gets table tests of its own.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import {
  type OutgoingMessage,
  sendMessage,
  type SendResult,
  type SmtpTarget,
} from "../lib/smtp/client.ts";
import {
  MAX_REPLY_LINE,
  MAX_REPLY_LINES,
  ReplyParser,
  ReplyProtocolError,
} from "../lib/smtp/client_reply.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a scripted server says: raw bytes, 221 and close, nothing, or a drop without reply. */
type Say = string | { close: true } | { hang: true } | { drop: true };

interface FakeServerOptions {
  /** Sent on connect; default "220 fake ESMTP\r\n". */
  greeting?: Say;
  /** The answer to one command line (without CRLF), or to "." after DATA content. */
  answer?: (line: string) => Say | undefined;
}

interface FakeServer {
  port: number;
  /** Everything the client sent, as text. */
  received(): string;
  /** Command lines seen, in order ("." for the end of DATA). */
  commands: string[];
  close(): Promise<void>;
}

function defaultAnswer(line: string): Say {
  const verb = line.split(/[ :]/)[0].toUpperCase();
  switch (verb) {
    case "EHLO":
      return "250-fake.test hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
    case "HELO":
      return "250 fake.test\r\n";
    case "MAIL":
    case "RCPT":
      return "250 2.1.0 Ok\r\n";
    case "DATA":
      return "354 End data with <CR><LF>.<CR><LF>\r\n";
    case ".":
      return "250 2.0.0 Ok: queued as ABC\r\n";
    case "QUIT":
      return { close: true };
    default:
      return "502 5.5.2 Error: command not recognized\r\n";
  }
}

/** A loopback server that answers each command per a script. */
async function fakeServer(opts: FakeServerOptions = {}): Promise<FakeServer> {
  let received = "";
  const commands: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    let buf = "";
    let scanned = 0;
    let inData = false;
    const say = (s: Say | undefined) => {
      if (s === undefined) return;
      if (typeof s === "string") sock.write(s);
      else if ("close" in s) sock.end("221 2.0.0 Bye\r\n");
      else if ("drop" in s) sock.destroy();
    };
    say(opts.greeting ?? "220 fake ESMTP\r\n");
    sock.on("data", (chunk: Uint8Array) => {
      const text = dec.decode(chunk);
      received += text;
      buf += text;
      while (true) {
        if (inData) {
          // Search only the new text (and the 4 chars before it): rescanning
          // a 4 MB body per packet would stall this event loop for seconds.
          const end = buf.indexOf("\r\n.\r\n", Math.max(0, scanned - 4));
          scanned = buf.length;
          if (end === -1) return;
          buf = buf.slice(end + 5);
          scanned = 0;
          inData = false;
          commands.push(".");
          say(opts.answer?.(".") ?? defaultAnswer("."));
          continue;
        }
        const eol = buf.indexOf("\r\n");
        if (eol === -1) return;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        commands.push(line);
        const answer = opts.answer?.(line) ?? defaultAnswer(line);
        if (typeof answer === "string" && answer.startsWith("354")) {
          inData = true;
          // DATA content may already be buffered: the "." line must be
          // found from a line start, so keep the CRLF before it findable.
          buf = "\r\n" + buf;
          scanned = 0;
        }
        say(answer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    received: () => received,
    commands,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function target(port: number, over: Partial<SmtpTarget> = {}): SmtpTarget {
  return {
    host: "127.0.0.1",
    port,
    helo: "client.test",
    connectTimeoutMs: 1000,
    replyTimeoutMs: 1000,
    ...over,
  };
}

/** A message whose content arrives in chunks of chunkSize bytes. */
function message(
  content: string,
  recipients: string[],
  opts: { from?: string; chunkSize?: number } = {},
): OutgoingMessage {
  const bytes = enc.encode(content);
  const size = opts.chunkSize ?? 4096;
  return {
    from: opts.from ?? "sender@example.test",
    recipients,
    size: bytes.length,
    content: () => {
      let at = 0;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull(ctrl) {
            if (at >= bytes.length) return ctrl.close();
            ctrl.enqueue(bytes.slice(at, at + size));
            at += size;
          },
        }),
      );
    },
  };
}

async function withServer(
  opts: FakeServerOptions,
  fn: (srv: FakeServer) => Promise<void>,
): Promise<void> {
  const srv = await fakeServer(opts);
  try {
    await fn(srv);
  } finally {
    await srv.close();
  }
}

function outcomes(res: SendResult): string[] {
  return res.recipients.map((r) => `${r.address} ${r.outcome} ${r.dsn}`);
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });

// ---- the reply parser -------------------------------------------------------

test("reply parser: single, multi-line, enhanced codes, split chunks", () => {
  const p = new ReplyParser();
  const wire = "220 mx.test ESMTP\r\n250-mx.test\r\n250-SIZE 1000\r\n250 8BITMIME\r\n" +
    "550 5.1.1 <a@b>: User unknown\r\n451-4.3.0 Try\r\n451 4.3.0 later\r\n354 go\r\n250\r\n";
  // Byte by byte: a reply must come out the same however the bytes arrive.
  for (const b of enc.encode(wire)) p.push(new Uint8Array([b]));
  assert.deepEqual(p.shift(), { code: 220, lines: ["mx.test ESMTP"] });
  assert.deepEqual(p.shift(), { code: 250, lines: ["mx.test", "SIZE 1000", "8BITMIME"] });
  assert.deepEqual(p.shift(), { code: 550, enhanced: "5.1.1", lines: ["<a@b>: User unknown"] });
  assert.deepEqual(p.shift(), { code: 451, enhanced: "4.3.0", lines: ["Try", "later"] });
  assert.deepEqual(p.shift(), { code: 354, lines: ["go"] });
  assert.deepEqual(p.shift(), { code: 250, lines: [""] });
  assert.equal(p.shift(), undefined);
  assert.equal(p.buffered, 0);
  return Promise.resolve();
});

test("reply parser: enhanced code class follows the reply code", () => {
  const p = new ReplyParser();
  p.push(enc.encode("550 2.0.0 nope\r\n250 2.10.300 fine\r\n250 2.1 not enhanced\r\n"));
  assert.deepEqual(p.shift(), { code: 550, enhanced: "5.0.0", lines: ["nope"] });
  assert.deepEqual(p.shift(), { code: 250, enhanced: "2.10.300", lines: ["fine"] });
  assert.deepEqual(p.shift(), { code: 250, lines: ["2.1 not enhanced"] });
  return Promise.resolve();
});

test("reply parser: malformed input is a protocol error", () => {
  const bad: [string, string | Uint8Array][] = [
    ["garbage", "HELLO THERE\r\n"],
    ["two digits", "25 ok\r\n"],
    ["1yz code", "150 ok\r\n"],
    ["bad separator", "250_ok\r\n"],
    ["mismatched codes", "250-a\r\n251 b\r\n"],
    ["bare LF", "250 ok\n"],
    ["bare CR inside", "250 o\rk\r\n"],
    ["overlong line", `250 ${"x".repeat(MAX_REPLY_LINE)}\r\n`],
    ["overlong without LF", "250 " + "x".repeat(100_000)],
    ["too many lines", "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 x\r\n"],
  ];
  for (const [name, wire] of bad) {
    const p = new ReplyParser();
    assert.throws(
      () => p.push(typeof wire === "string" ? enc.encode(wire) : wire),
      ReplyProtocolError,
      name,
    );
    // Once failed, always failed.
    assert.throws(() => p.push(enc.encode("250 ok\r\n")), ReplyProtocolError, name);
  }
  const ok = new ReplyParser();
  ok.push(enc.encode("250-x\r\n".repeat(MAX_REPLY_LINES - 1) + "250 x\r\n"));
  assert.equal(ok.shift()?.lines.length, MAX_REPLY_LINES);
  return Promise.resolve();
});

// ---- sessions against scripted servers --------------------------------------

const CONTENT = "From: a@example.test\r\nSubject: dots\r\n\r\n" +
  ".leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\n\nbare LF line\n.after bare LF\r\nno final CRLF";
const STUFFED = "From: a@example.test\r\nSubject: dots\r\n\r\n" +
  "..leading dot\r\n...two dots\r\nmiddle . dot\r\n..\r\n\r\nbare LF line\r\n..after bare LF\r\n" +
  "no final CRLF\r\n.\r\n";

test("happy path: two recipients, exact bytes, dot-stuffing in any chunking", async () => {
  for (const chunkSize of [1, 2, 3, 7, 4096]) {
    await withServer({}, async (srv) => {
      const res = await sendMessage(
        target(srv.port),
        message(CONTENT, ["one@example.test", "two@example.test"], { chunkSize }),
      );
      assert.equal(res.relay, `127.0.0.1[127.0.0.1]:${srv.port}`);
      assert.deepEqual(res.recipients, [
        {
          address: "one@example.test",
          outcome: "delivered",
          code: 250,
          dsn: "2.0.0",
          text: "Ok: queued as ABC",
        },
        {
          address: "two@example.test",
          outcome: "delivered",
          code: 250,
          dsn: "2.0.0",
          text: "Ok: queued as ABC",
        },
      ]);
      assert.equal(
        srv.received(),
        "EHLO client.test\r\n" +
          "MAIL FROM:<sender@example.test>\r\n" +
          "RCPT TO:<one@example.test>\r\n" +
          "RCPT TO:<two@example.test>\r\n" +
          "DATA\r\n" +
          STUFFED +
          "QUIT\r\n",
        `chunk size ${chunkSize}`,
      );
    });
  }
});

test("content already ending in CRLF gets no extra line; empty content; null sender", async () => {
  await withServer({}, async (srv) => {
    const res = await sendMessage(
      target(srv.port),
      message("Subject: x\r\n\r\nbody\r\n", ["a@b.test"], { from: "" }),
    );
    assert.deepEqual(outcomes(res), ["a@b.test delivered 2.0.0"]);
    assert.ok(srv.received().includes("MAIL FROM:<>\r\n"));
    assert.ok(srv.received().includes("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"));
  });
  await withServer({}, async (srv) => {
    const res = await sendMessage(target(srv.port), message("", ["a@b.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test delivered 2.0.0"]);
    assert.ok(srv.received().includes("DATA\r\n.\r\nQUIT\r\n"));
  });
});

test("a bare CR is sent as CRLF, so a hidden '.' line is stuffed", async () => {
  await withServer({}, async (srv) => {
    const res = await sendMessage(
      target(srv.port),
      message("a\r.\rb\r\n", ["a@b.test"], { chunkSize: 1 }),
    );
    assert.deepEqual(outcomes(res), ["a@b.test delivered 2.0.0"]);
    assert.ok(srv.received().includes("DATA\r\na\r\n..\r\nb\r\n.\r\nQUIT\r\n"));
  });
});

test("EHLO 502 falls back to HELO", async () => {
  await withServer({
    answer: (l) => l.startsWith("EHLO") ? "502 5.5.2 Error: command not recognized\r\n" : undefined,
  }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test delivered 2.0.0"]);
    assert.deepEqual(srv.commands.slice(0, 3), [
      "EHLO client.test",
      "HELO client.test",
      "MAIL FROM:<sender@example.test>",
    ]);
  });
});

test("EHLO 421 defers without HELO", async () => {
  await withServer({
    answer: (l) => l.startsWith("EHLO") ? "421 4.3.2 Shutting down\r\n" : undefined,
  }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test"]));
    assert.deepEqual(res.recipients, [{
      address: "a@b.test",
      outcome: "deferred",
      code: 421,
      dsn: "4.3.2",
      text: "Shutting down",
    }]);
    assert.ok(!srv.commands.some((c) => c.startsWith("HELO")));
  });
});

test("RCPT 450 and 550: one deferred, one failed, DATA for the rest", async () => {
  await withServer({
    answer: (l) =>
      l === "RCPT TO:<busy@b.test>"
        ? "450 4.2.0 <busy@b.test>: Mailbox busy\r\n"
        : l === "RCPT TO:<nobody@b.test>"
        ? "550 User unknown\r\n"
        : undefined,
  }, async (srv) => {
    const res = await sendMessage(
      target(srv.port),
      message("x\r\n", ["ok@b.test", "busy@b.test", "nobody@b.test", "ok2@b.test"]),
    );
    assert.deepEqual(res.recipients, [
      {
        address: "ok@b.test",
        outcome: "delivered",
        code: 250,
        dsn: "2.0.0",
        text: "Ok: queued as ABC",
      },
      {
        address: "busy@b.test",
        outcome: "deferred",
        code: 450,
        dsn: "4.2.0",
        text: "<busy@b.test>: Mailbox busy",
      },
      {
        address: "nobody@b.test",
        outcome: "failed",
        code: 550,
        dsn: "5.0.0",
        text: "User unknown",
      },
      {
        address: "ok2@b.test",
        outcome: "delivered",
        code: 250,
        dsn: "2.0.0",
        text: "Ok: queued as ABC",
      },
    ]);
    assert.ok(srv.commands.includes("DATA"));
    assert.ok(srv.commands.includes("."));
  });
});

test("all RCPTs rejected: no DATA, QUIT", async () => {
  await withServer({
    answer: (l) => l.startsWith("RCPT") ? "550 5.7.1 Relaying denied\r\n" : undefined,
  }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test", "c@d.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test failed 5.7.1", "c@d.test failed 5.7.1"]);
    assert.ok(!srv.commands.includes("DATA"));
    assert.equal(srv.commands.at(-1), "QUIT");
  });
});

test("421 greeting defers everyone; 554 greeting fails everyone", async () => {
  await withServer({ greeting: "421 4.3.2 Too busy\r\n" }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test", "c@d.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test deferred 4.3.2", "c@d.test deferred 4.3.2"]);
    assert.equal(res.recipients[0].code, 421);
    assert.equal(res.recipients[0].text, "Too busy");
    assert.ok(!srv.commands.some((c) => c.startsWith("EHLO")));
  });
  await withServer({ greeting: "554 No SMTP service here\r\n" }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test failed 5.0.0"]);
  });
});

test("MAIL 5xx fails everyone, MAIL 4xx defers everyone", async () => {
  await withServer({
    answer: (l) => l.startsWith("MAIL") ? "553 5.1.8 Sender domain unknown\r\n" : undefined,
  }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test", "c@d.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test failed 5.1.8", "c@d.test failed 5.1.8"]);
    // The server offers PIPELINING: the RCPTs went in MAIL's group (RFC 2920), no DATA followed.
    assert.ok(!srv.commands.includes("DATA"));
  });
  await withServer({
    answer: (l) => l.startsWith("MAIL") ? "451 Try later\r\n" : undefined,
  }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test"]));
    assert.deepEqual(outcomes(res), ["a@b.test deferred 4.0.0"]);
  });
});

test("final reply 4xx defers and 5xx fails the accepted recipients only", async () => {
  for (
    const [reply, expected] of [["452 4.3.1 Disk full\r\n", "deferred 4.3.1"], [
      "554 5.6.0 Content rejected\r\n",
      "failed 5.6.0",
    ]]
  ) {
    await withServer({
      answer: (l) =>
        l === "." ? reply : l === "RCPT TO:<x@b.test>" ? "550 5.1.1 Unknown\r\n" : undefined,
    }, async (srv) => {
      const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test", "x@b.test"]));
      assert.deepEqual(outcomes(res), [`a@b.test ${expected}`, "x@b.test failed 5.1.1"]);
      assert.equal(srv.commands.at(-1), "QUIT");
    });
  }
});

test("connection refused defers with 4.4.1", async () => {
  // A port that was just free: nothing listens there.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const res = await sendMessage(target(port), message("x\r\n", ["a@b.test", "c@d.test"]));
  assert.deepEqual(res.recipients.map((r) => [r.outcome, r.dsn, r.code, r.text]), [
    ["deferred", "4.4.1", 0, `Connection refused by 127.0.0.1:${port}`],
    ["deferred", "4.4.1", 0, `Connection refused by 127.0.0.1:${port}`],
  ]);
  assert.equal(res.relay, `127.0.0.1[127.0.0.1]:${port}`);
});

test("server closes after the final dot: deferred (may be delivered twice)", async () => {
  await withServer({ answer: (l) => l === "." ? { drop: true } : undefined }, async (srv) => {
    const t0 = Date.now();
    const res = await sendMessage(
      target(srv.port, { replyTimeoutMs: 3000 }),
      message("x\r\n", ["a@b.test"]),
    );
    assert.deepEqual(outcomes(res), ["a@b.test deferred 4.4.2"]);
    assert.match(res.recipients[0].text, /^Lost connection .* end of data/);
    assert.ok(Date.now() - t0 < 1000, "answered by the close, not by the timeout");
  });
});

test("no reply after the final dot: deferred on timeout", async () => {
  await withServer({ answer: (l) => l === "." ? { hang: true } : undefined }, async (srv) => {
    const res = await sendMessage(
      target(srv.port, { replyTimeoutMs: 200 }),
      message("x\r\n", ["a@b.test"]),
    );
    assert.deepEqual(outcomes(res), ["a@b.test deferred 4.4.2"]);
    assert.match(res.recipients[0].text, /timed out while sending end of data/);
  });
});

test("silent server: greeting timeout defers", async () => {
  await withServer({ greeting: { hang: true } }, async (srv) => {
    const res = await sendMessage(
      target(srv.port, { replyTimeoutMs: 200 }),
      message("x\r\n", ["a@b.test"]),
    );
    assert.deepEqual(outcomes(res), ["a@b.test deferred 4.4.2"]);
    assert.match(res.recipients[0].text, /timed out while receiving the initial server greeting/);
  });
});

test("hostile replies end in a quick protocol error, never a crash", async () => {
  const hostile: [string, FakeServerOptions][] = [
    ["100 KB greeting line", { greeting: `220 ${"x".repeat(100_000)}\r\n` }],
    ["100 KB line without end", { greeting: `220 ${"x".repeat(100_000)}` }],
    ["10,000 continuation lines", { greeting: "220-x\r\n".repeat(10_000) + "220 x\r\n" }],
    ["10,000 EHLO lines", {
      answer: (l) => l.startsWith("EHLO") ? "250-X\r\n".repeat(10_000) : undefined,
    }],
    ["mismatched codes", { greeting: "220-hello\r\n250 there\r\n" }],
    ["garbage greeting", { greeting: "SSH-2.0-OpenSSH_9.2\r\n" }],
    ["garbage RCPT reply", {
      answer: (l) => l.startsWith("RCPT") ? "\x00\x01\x02 nonsense\r\n" : undefined,
    }],
    ["bare LF", { greeting: "220 hi\n" }],
    ["two replies to one command", {
      answer: (l) => l.startsWith("MAIL") ? "250 ok\r\n250 ok\r\n" : undefined,
    }],
    ["3xx to RCPT", { answer: (l) => l.startsWith("RCPT") ? "354 what\r\n" : undefined }],
    ["2xx to DATA", { answer: (l) => l === "DATA" ? "250 ok\r\n" : undefined }],
  ];
  for (const [name, opts] of hostile) {
    await withServer(opts, async (srv) => {
      const t0 = Date.now();
      const res = await sendMessage(
        target(srv.port, { replyTimeoutMs: 3000 }),
        message("x\r\n", ["a@b.test", "c@d.test"]),
      );
      assert.ok(Date.now() - t0 < 1000, `${name}: took ${Date.now() - t0} ms`);
      assert.deepEqual(outcomes(res), ["a@b.test deferred 4.5.0", "c@d.test deferred 4.5.0"], name);
      assert.match(
        res.recipients[0].text,
        /^Protocol error from 127\.0\.0\.1\[127\.0\.0\.1\]/,
        name,
      );
      assert.ok(res.recipients[0].text.length <= 500, name);
      assert.ok(!srv.commands.includes("."), name);
    });
  }
});

test("server reply text is cleaned and capped", async () => {
  await withServer({
    answer: (l) =>
      l.startsWith("RCPT") ? `550-5.1.1 a\tb\x1bc\r\n550 5.1.1 ${"y".repeat(1500)}\r\n` : undefined,
  }, async (srv) => {
    const res = await sendMessage(target(srv.port), message("x\r\n", ["a@b.test"]));
    const r = res.recipients[0];
    assert.equal(r.outcome, "failed");
    assert.equal(r.dsn, "5.1.1");
    assert.ok(r.text.startsWith("a b c yyy"), r.text);
    assert.ok(r.text.length <= 500);
  });
});

test("addresses that would inject commands are refused locally", async () => {
  await withServer({}, async (srv) => {
    const res = await sendMessage(
      target(srv.port),
      message("x\r\n", ["ok@b.test", "evil@b.test>\r\nRCPT TO:<x@y"]),
    );
    assert.deepEqual(outcomes(res), [
      "ok@b.test delivered 2.0.0",
      `${res.recipients[1].address} failed 5.1.3`,
    ]);
    assert.ok(!srv.received().includes("x@y"));
  });
  await withServer({}, async (srv) => {
    const res = await sendMessage(
      target(srv.port),
      message("x\r\n", ["ok@b.test"], { from: "a@b\r\nDATA" }),
    );
    assert.deepEqual(outcomes(res), ["ok@b.test failed 5.1.7"]);
    assert.equal(srv.received(), "");
  });
});

test("a content stream that fails mid-way is cancelled and defers", async () => {
  await withServer({}, async (srv) => {
    let sent = 0;
    const msg: OutgoingMessage = {
      from: "a@b.test",
      recipients: ["c@d.test"],
      size: 100,
      content: () =>
        Promise.resolve(
          new ReadableStream<Uint8Array>({
            pull(ctrl) {
              if (sent++ === 0) ctrl.enqueue(enc.encode("partial\r\n"));
              else ctrl.error(new Error("Disk on fire"));
            },
          }),
        ),
    };
    const res = await sendMessage(target(srv.port), msg);
    assert.deepEqual(outcomes(res), ["c@d.test deferred 4.3.0"]);
    assert.match(res.recipients[0].text, /Disk on fire/);
    assert.ok(!srv.commands.includes("."), "no end of data for an unread message");
  });
});

test("unreadable content: no DATA, clean QUIT, deferred", async () => {
  await withServer({}, async (srv) => {
    const msg = message("x\r\n", ["c@d.test"]);
    msg.content = () => Promise.reject(new Error("No such spool file"));
    const res = await sendMessage(target(srv.port), msg);
    assert.deepEqual(outcomes(res), ["c@d.test deferred 4.3.0"]);
    assert.match(res.recipients[0].text, /No such spool file/);
    assert.ok(!srv.commands.includes("DATA"));
    assert.equal(srv.commands.at(-1), "QUIT");
  });
});

test("DATA 554: content stream cancelled, accepted recipients failed", async () => {
  await withServer({
    answer: (l) => l === "DATA" ? "554 5.5.1 No valid recipients\r\n" : undefined,
  }, async (srv) => {
    let cancelled = false;
    const msg = message("x\r\n", ["c@d.test"]);
    msg.content = () =>
      Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull: (ctrl) => ctrl.enqueue(enc.encode("x\r\n")),
          cancel: () => {
            cancelled = true;
          },
        }),
      );
    const res = await sendMessage(target(srv.port), msg);
    assert.deepEqual(outcomes(res), ["c@d.test failed 5.5.1"]);
    assert.ok(cancelled, "the source was closed");
    assert.equal(srv.commands.at(-1), "QUIT");
  });
});

test("no valid recipient: no connection at all", async () => {
  const res = await sendMessage(target(1), message("x\r\n", ["bad\n@x", ""]));
  assert.deepEqual(outcomes(res), [`bad\n@x failed 5.1.3`, " failed 5.1.3"]);
});

test("a 4 MB message streams through in batches, stuffed exactly", async () => {
  const line = ".0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
  const content = line.repeat(Math.ceil(4_000_000 / line.length));
  await withServer({}, async (srv) => {
    const res = await sendMessage(
      // A deadline, not an assertion: 4 MB through one loaded event loop can take seconds.
      target(srv.port, { replyTimeoutMs: 60_000 }),
      message(content, ["a@b.test"], { chunkSize: 10_000 }),
    );
    assert.deepEqual(outcomes(res), ["a@b.test delivered 2.0.0"]);
    const got = srv.received();
    const start = got.indexOf("DATA\r\n") + 6;
    assert.equal(
      got.slice(start),
      ("." + line).repeat(content.length / line.length) + ".\r\nQUIT\r\n",
    );
  });
});

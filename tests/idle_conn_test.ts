/**
 * Idle connections and the shared deadline timer (issue 13): reads and
 * writes no longer arm a timer each but wait in one set served by a single
 * timer (lib/net/deadlines.ts), and sessions keep one async frame each.
 * These tests check nothing was lost on the way: deadlines expire in order
 * and only when due, idle connections among many time out with their 421
 * while busy ones carry on, a pipelined burst gets every reply in order,
 * and a 1 MB message from swaks reaches the spool byte for byte.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { parseConfig } from "../lib/config/load.ts";
import { type Listener, startSmtpListener } from "../lib/listen/smtp_listener.ts";
import { Deadlines, ioDeadlines } from "../lib/net/deadlines.ts";
import { Spool } from "../lib/spool/spool.ts";
import { PEERS, peerTest } from "./peers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("Deadlines: waiters expire in due order, never early, removed ones never, no timer left", async () => {
  const d = new Deadlines();
  const fired: string[] = [];
  const waiter = (name: string) => {
    const w = {
      due: 0,
      expire: () => {
        // Never early (the shared timer runs on a grid, so it may be a little late).
        assert.ok(Date.now() >= w.due, `${name} expired ${w.due - Date.now()} ms early`);
        fired.push(name);
      },
    };
    return w;
  };
  const late = waiter("late");
  const early = waiter("early");
  const gone = waiter("gone");
  const mid = waiter("mid");
  d.add(late, 120);
  d.add(early, 20); // earlier than the armed timer: re-arms
  d.add(gone, 40);
  d.add(mid, 60);
  d.remove(gone);
  await new Promise((r) => setTimeout(r, 400));
  assert.deepEqual(fired, ["early", "mid", "late"]);
  assert.equal(d.size, 0);
  // A waiter removed before its time leaves nothing armed (the test's op sanitizer checks too).
  const w = waiter("never");
  d.add(w, 10_000);
  d.remove(w);
  assert.equal(d.size, 0);
  assert.deepEqual(fired, ["early", "mid", "late"]);
});

/** An in-process listener on a fresh spool; `limits` are extra [limits] lines. */
async function listen(limits: string): Promise<{
  port: number;
  spool: Spool;
  queued: string[];
  stop: () => Promise<void>;
}> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-idle-" });
  const cfg = parseConfig(
    `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n` +
      `[limits]\nconnections = 400\nconnections_per_ip = 400\n${limits}\n[log]\nlevel = "error"\n`,
    "idle test",
    { cwd: dir },
  );
  const spool = new Spool(cfg.spoolDir);
  await spool.init();
  const queued: string[] = [];
  const lc = { ...cfg.listeners[0], address: { kind: "tcp" as const, host: "127.0.0.1", port: 0 } };
  const listener: Listener = await startSmtpListener(lc, {
    config: cfg,
    spool,
    onQueued: (id) => queued.push(id),
  });
  return {
    port: Number(listener.address.split(":").pop()),
    spool,
    queued,
    stop: async () => {
      await listener.close(1000);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A raw client: collects everything the server says until it closes. */
class Raw {
  text = "";
  closed: Promise<void>;
  #sock: net.Socket;
  constructor(port: number) {
    this.#sock = net.connect({ host: "127.0.0.1", port });
    this.#sock.on("data", (b) => this.text += dec.decode(b));
    this.#sock.on("error", () => {});
    this.closed = new Promise((r) => this.#sock.on("close", () => r()));
  }
  write(s: string): void {
    this.#sock.write(enc.encode(s));
  }
  async until(re: RegExp, ms = 10_000): Promise<string> {
    const end = Date.now() + ms;
    while (!re.test(this.text)) {
      if (Date.now() > end) throw new Error(`No ${re} in ${JSON.stringify(this.text)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.text;
  }
  destroy(): void {
    this.#sock.destroy();
  }
}

Deno.test({
  name:
    "many idle connections time out with 421 on the shared timer; a pipelined burst beside them " +
    "gets every reply in order",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await listen("command_timeout = 2");
    const idle: Raw[] = [];
    try {
      for (let i = 0; i < 150; i++) idle.push(new Raw(srv.port));
      await Promise.all(idle.map((c) => c.until(/^220 .*\r\n/)));
      // One client pipelines three whole transactions in a single write (RFC 2920).
      const busy = new Raw(srv.port);
      await busy.until(/^220 /);
      let burst = "EHLO burst.test\r\n";
      for (let i = 0; i < 3; i++) {
        burst += `MAIL FROM:<a${i}@example.org>\r\nRCPT TO:<b@localhost>\r\nDATA\r\n` +
          `Subject: ${i}\r\n\r\n..dot ${i}\r\nbody ${i}\r\n.\r\n`;
      }
      busy.write(burst + "NOOP\r\nQUIT\r\n");
      const out = await busy.until(/^221 .*\r\n/m);
      const codes = out.split("\r\n").filter((l) => /^\d{3} /.test(l)).map((l) => l.slice(0, 3));
      const transaction = ["250", "250", "354", "250"]; // MAIL, RCPT, DATA, end of data
      assert.deepEqual(codes, [
        "220",
        "250",
        ...transaction,
        ...transaction,
        ...transaction,
        "250",
        "221",
      ]);
      assert.equal(srv.queued.length, 3);
      // Meanwhile every idle connection is still open, then each gets its 421 at the deadline.
      assert.ok(idle.every((c) => !/421/.test(c.text)));
      await Promise.all(idle.map((c) => c.until(/^421 4\.4\.2 .*timeout exceeded\r\n/m, 15_000)));
      await Promise.all(idle.map((c) => c.closed));
      assert.equal(ioDeadlines.size, 0, "no deadline left once every connection closed");
    } finally {
      for (const c of idle) c.destroy();
      await srv.stop();
    }
  },
});

/** A 1 MB body with dot-leading lines (swaks stuffs them, skiff unstuffs them). */
function bigBody(): string {
  const lines: string[] = ["Subject: big", ""];
  let size = 0;
  for (let i = 0; size < 1024 * 1024; i++) {
    const line = (i % 7 === 0 ? "." : "") + `line ${i} ` + "x".repeat(60 + (i % 50));
    lines.push(line);
    size += line.length + 2;
  }
  return lines.join("\r\n") + "\r\n";
}

peerTest("a 1 MB message from swaks reaches the spool byte for byte", [PEERS.swaks], async () => {
  const srv = await listen("message_size = 20000000");
  try {
    const body = bigBody();
    const child = new Deno.Command(PEERS.swaks.bin, {
      args: [
        "--server",
        `127.0.0.1:${srv.port}`,
        "--from",
        "alice@example.org",
        "--to",
        "bob@localhost",
        "--pipeline",
        "--data",
        "-",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(enc.encode(body));
    await w.close();
    const out = await child.output();
    const log = dec.decode(out.stdout) + dec.decode(out.stderr);
    assert.equal(out.code, 0, log.slice(-2000));
    assert.equal(srv.queued.length, 1, log.slice(-2000));
    const { stream } = await srv.spool.content(srv.queued[0]);
    const got = new Uint8Array(await new Response(stream).arrayBuffer());
    // swaks ends what it reads with one more CRLF (an empty last line), as tests/e2e_test.ts notes.
    const want = enc.encode(body + "\r\n");
    // skiff adds its Received header in front; the rest is what swaks sent, unstuffed.
    assert.ok(got.length > want.length, `${got.length} <= ${want.length}`);
    const tail = got.subarray(got.length - want.length);
    assert.ok(dec.decode(got.subarray(0, got.length - want.length)).startsWith("Received: "));
    assert.equal(tail.length, want.length);
    const at = tail.findIndex((b, i) => b !== want[i]);
    assert.equal(
      at,
      -1,
      `content differs at ${at}: ${
        JSON.stringify(dec.decode(tail.subarray(Math.max(0, at - 40), at + 40)))
      } vs ${JSON.stringify(dec.decode(want.subarray(Math.max(0, at - 40), at + 40)))}`,
    );
  } finally {
    await srv.stop();
  }
});

/**
 * Pieces of the crash-torture check shared by scripts/torture.ts and the
 * tests: a `skiff serve` started in its own process group (so `kill -9` of
 * the group takes its worker children too), and a minimal SMTP sender that
 * submits messages carrying a unique token and notes which got a 250.
 */
import { PERMISSION_FLAGS } from "../lib/sys/self_command.ts";
import { TOKEN_HEADER } from "./token_sink.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ROOT = new URL("..", import.meta.url).pathname;
const FLAGS = PERMISSION_FLAGS;

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Starts argv in a new session and process group with stderr appended to a
 * file, then execs it in place (the group id is the child's pid). skiff
 * logs with synchronous writes to stderr: through a pipe read by this busy
 * process it would stall whenever the pipe filled, and every delivery
 * answered meanwhile would wait, unrecorded, for the next kill. Python
 * because Deno.Command cannot point stderr at a file; no shell is involved.
 */
const LAUNCH = [
  "import os, sys",
  "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)",
  "os.dup2(fd, 2)",
  "os.close(fd)",
  "os.setsid()",
  "os.execv(sys.argv[2], sys.argv[2:])",
].join("\n");

/** A `skiff serve` in its own session and process group; its log is a file every restart appends to. */
export class SkiffGroup {
  readonly pid: number;
  #child: Deno.ChildProcess;
  #log: string;
  #exited: Promise<Deno.CommandStatus>;

  private constructor(child: Deno.ChildProcess, log: string) {
    this.#child = child;
    this.pid = child.pid;
    this.#log = log;
    this.#exited = child.status;
  }

  /** Starts skiff with `config`, appending its stderr to `log`; resolves once it is ready. */
  static async start(config: string, log: string, timeoutMs = 30_000): Promise<SkiffGroup> {
    const start = (await Deno.stat(log).catch(() => null))?.size ?? 0;
    await Deno.writeFile(log, new Uint8Array(0), { append: true });
    const child = new Deno.Command("/usr/bin/python3", {
      args: [
        "-c",
        LAUNCH,
        log,
        Deno.execPath(),
        "run",
        "--quiet",
        "--config",
        `${ROOT}deno.json`,
        ...FLAGS,
        `${ROOT}main.ts`,
        "--config",
        config,
        "serve",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const g = new SkiffGroup(child, log);
    await g.#waitReady(start, timeoutMs);
    return g;
  }

  async #waitReady(from: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.#exited.then(() => exited = true);
    while (Date.now() < deadline) {
      const text = decoder.decode((await Deno.readFile(this.#log)).subarray(from));
      if (/ ready /.test(text)) return;
      if (exited) {
        throw new Error(
          `skiff exited before it was ready; log ${this.#log}:\n${text.slice(-2000)}`,
        );
      }
      await sleep(50);
    }
    await this.kill();
    throw new Error(`skiff was not ready within ${timeoutMs} ms; log ${this.#log}`);
  }

  /** `kill -9` of the whole process group, then waits for the leader's exit. */
  async kill(): Promise<void> {
    try {
      Deno.kill(-this.pid, "SIGKILL");
    } catch { /* gone */ }
    await this.#exited;
  }

  /** SIGTERM to skiff, bounded: SIGKILL of the group after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    try {
      Deno.kill(this.pid, "SIGTERM");
    } catch { /* gone */ }
    const done = await Promise.race([this.#exited.then(() => true), sleep(graceMs)]);
    if (!done) await this.kill();
    try {
      Deno.kill(-this.pid, "SIGKILL"); // stragglers of the group
    } catch { /* none */ }
  }
}

/** What the senders saw. */
export interface SendTally {
  /** Tokens whose end of data was written. */
  sent: Set<string>;
  /** Tokens that got a 250 after the data. */
  accepted: Set<string>;
}

/** Reads SMTP replies from a connection with a deadline per reply. */
class ReplyReader {
  #buf = "";
  #chunk = new Uint8Array(16 * 1024);
  constructor(private conn: Deno.Conn, private timeoutMs: number) {}

  /** The code of the next complete (possibly multi-line) reply. */
  async code(): Promise<number> {
    const timer = setTimeout(() => this.conn.close(), this.timeoutMs);
    try {
      while (true) {
        let eol;
        while ((eol = this.#buf.indexOf("\r\n")) >= 0) {
          const line = this.#buf.slice(0, eol);
          this.#buf = this.#buf.slice(eol + 2);
          if (line.length < 4 || line[3] === " ") return Number(line.slice(0, 3));
        }
        const n = await this.conn.read(this.#chunk);
        if (n === null) throw new Error("Connection closed by skiff");
        this.#buf += decoder.decode(this.#chunk.subarray(0, n));
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

async function writeAll(conn: Deno.Conn, text: string): Promise<void> {
  const b = encoder.encode(text);
  let off = 0;
  while (off < b.length) off += await conn.write(b.subarray(off));
}

/** Options for one sender loop. */
export interface SenderOptions {
  port: number;
  /** Recipient (skiff relays it to the sink). */
  to: string;
  /** Unique prefix of this sender's tokens. */
  prefix: string;
  /** Stop when this returns true (checked between messages). */
  stop: () => boolean;
  /** Wait before the next message while this returns true (backlog control). */
  hold?: () => boolean;
  /** Messages per connection before QUIT. */
  perConnection?: number;
  /** Padding bytes per message body. */
  bodySize?: number;
  tally: SendTally;
}

/**
 * Submits messages one after another, reconnecting after any trouble
 * (skiff being killed); never throws. A message counts as sent once the
 * end of data is written and as accepted only on a 250 reply to it.
 */
export async function sender(o: SenderOptions): Promise<void> {
  let seq = 0;
  const pad = "x".repeat(Math.max(0, (o.bodySize ?? 512) - 1));
  while (!o.stop()) {
    let conn: Deno.Conn | null = null;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: o.port });
      const r = new ReplyReader(conn, 30_000);
      if (await r.code() !== 220) throw new Error("No 220");
      await writeAll(conn, "EHLO torture.test\r\n");
      if (await r.code() !== 250) throw new Error("EHLO refused");
      for (let i = 0; i < (o.perConnection ?? 20) && !o.stop(); i++) {
        while (o.hold?.() && !o.stop()) await sleep(50);
        const token = `${o.prefix}-${++seq}`;
        await writeAll(conn, `MAIL FROM:<torture@torture.test>\r\nRCPT TO:<${o.to}>\r\nDATA\r\n`);
        if (await r.code() !== 250 || await r.code() !== 250 || await r.code() !== 354) {
          throw new Error("Transaction refused");
        }
        await writeAll(
          conn,
          `From: torture@torture.test\r\nTo: ${o.to}\r\nSubject: torture ${token}\r\n` +
            `Message-ID: <${token}@torture.test>\r\n${TOKEN_HEADER}: ${token}\r\n\r\n${pad}\r\n.\r\n`,
        );
        o.tally.sent.add(token);
        if (await r.code() === 250) o.tally.accepted.add(token);
        else throw new Error("Data refused");
      }
      await writeAll(conn, "QUIT\r\n");
      await r.code().catch(() => 0);
    } catch {
      await sleep(50);
    } finally {
      try {
        conn?.close();
      } catch { /* closed */ }
    }
  }
}

/** The counts a torture run reports. */
export interface TortureFigures {
  kills: number;
  senders: number;
  sent: number;
  accepted: number;
  /** Accepted tokens that reached the sink at least once. */
  delivered: number;
  /** Extra copies at the sink (every delivery of a token after its first). */
  duplicated: number;
  /** Accepted tokens never delivered: must be 0. */
  lost: number;
  /** Tokens at the sink that never got a 250 (killed between commit and reply). */
  deliveredUnaccepted: number;
  /** Messages still queued when the drain time ran out. */
  leftInQueue: number;
  seconds: number;
}

/** Counts the figures from the senders' tally and the sink's token list. */
export function countFigures(
  tally: SendTally,
  sinkTokens: string[],
  extra: Pick<TortureFigures, "kills" | "senders" | "leftInQueue" | "seconds">,
): TortureFigures {
  const seen = new Map<string, number>();
  for (const t of sinkTokens) seen.set(t, (seen.get(t) ?? 0) + 1);
  let delivered = 0;
  for (const t of tally.accepted) if (seen.has(t)) delivered++;
  let duplicated = 0;
  for (const n of seen.values()) duplicated += n - 1;
  let unaccepted = 0;
  for (const t of seen.keys()) if (!tally.accepted.has(t)) unaccepted++;
  return {
    ...extra,
    sent: tally.sent.size,
    accepted: tally.accepted.size,
    delivered,
    duplicated,
    lost: tally.accepted.size - delivered,
    deliveredUnaccepted: unaccepted,
  };
}

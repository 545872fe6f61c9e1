/**
 * Test harness: runs a real `skiff serve` (a child process under `deno run`,
 * exactly as operators start it) in a temporary directory with its own spool,
 * Maildirs and a free loopback port, and gives tests a raw SMTP client.
 */
import { PERMISSION_FLAGS, V8_FLAGS } from "../lib/sys/self_command.ts";
import * as net from "node:net";
import { runCommand, type RunOptions } from "./run_cmd.ts";

export const ROOT = new URL("..", import.meta.url).pathname;
export const MAIN = `${ROOT}main.ts`;
const FLAGS = [...PERMISSION_FLAGS, ...V8_FLAGS];

/** Ports this test process has handed out: the kernel may offer a released one again. */
const handedOut = new Set<number>();

/** A free TCP port on 127.0.0.1 (bound then released), never one handed out before. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.once("error", reject);
      srv.listen({ host: "127.0.0.1", port: 0 }, () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("No fresh free port after 100 tries");
}

/**
 * Points a config's DNS at a closed loopback port unless it names a name
 * server: no test may query the machine's own resolver, which is not on
 * loopback. An MX lookup then fails temporarily (4.4.3) once dns_timeout runs out.
 */
export function guardDns(toml: string): string {
  if (/^nameserver\s*=/m.test(toml)) return toml;
  const guard = `nameserver = "127.0.0.1:1"`;
  const guarded = toml.includes("[delivery]\n")
    ? toml.replace("[delivery]\n", `[delivery]\n${guard}\n`)
    : `${toml}\n[delivery]\n${guard}\n`;
  // Inbound checks (clients outside relay_networks) then meet no name server: give up fast.
  return guarded.includes("[mailauth]") ? guarded : `${guarded}\n[mailauth]\ndns_timeout = 1\n`;
}

/** The argv that runs skiff under `deno run` with the task's permissions. */
export function skiffArgs(args: string[]): string[] {
  return ["run", "--quiet", "--config", `${ROOT}deno.json`, ...FLAGS, MAIN, ...args];
}

/** Runs a skiff command to completion. */
export function runSkiff(
  args: string[],
  opts: RunOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCommand([Deno.execPath(), ...skiffArgs(args)], opts);
}

/** Options for a test server. */
export interface ServerOptions {
  /** Extra TOML appended to the generated config (top-level keys must come first: use `top`). */
  toml?: string;
  /** Top-level TOML keys (before any table). */
  top?: string;
  /** Reuse this directory (restart after a crash). */
  dir?: string;
  /** Reuse this port. */
  port?: number;
  /** Lines of the [queue] table (default: fast retries for tests). */
  queue?: string;
  /** The [local] domains (default ["localhost"]). */
  domains?: string[];
  /** More lines of the [local] table. */
  local?: string;
  /** Extra environment for the server (e.g. a DENO_DIR its `nobody` workers can read). */
  env?: Record<string, string>;
}

/** A running `skiff serve`. */
export class SkiffServer {
  readonly dir: string;
  readonly port: number;
  readonly configPath: string;
  #child: Deno.ChildProcess;
  #log = "";
  #exited: Promise<Deno.CommandStatus>;

  private constructor(dir: string, port: number, configPath: string, child: Deno.ChildProcess) {
    this.dir = dir;
    this.port = port;
    this.configPath = configPath;
    this.#child = child;
    this.#exited = child.status;
    this.#pump(child.stderr);
  }

  /** Starts a server and waits until it is ready. */
  static async start(opts: ServerOptions = {}): Promise<SkiffServer> {
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "skiff-test-" });
    const port = opts.port ?? await freePort();
    const configPath = `${dir}/skiff.toml`;
    await Deno.writeTextFile(
      configPath,
      `${opts.top ?? ""}
spool_dir = "${dir}/spool"
[[listener]]
address = "127.0.0.1:${port}"
protocol = "smtp"
[local]
domains = ${JSON.stringify(opts.domains ?? ["localhost"])}
maildir_root = "${dir}/mail"
${opts.local ?? ""}
[queue]
${opts.queue ?? "retry_min = 1\nretry_max = 4"}
${guardDns(opts.toml ?? "")}
`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: skiffArgs(["--config", configPath, "serve"]),
      cwd: dir,
      env: opts.env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const server = new SkiffServer(dir, port, configPath, child);
    await server.waitForLog(/ ready /, 20_000);
    return server;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Everything the server logged so far. */
  get log(): string {
    return this.#log;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) {
        const text = dec.decode(chunk, { stream: true });
        this.#log += text;
        if (Deno.env.get("SKIFF_TEST_LOG")) await Deno.stderr.write(chunk);
      }
    } catch { /* closed */ }
  }

  /** Waits until the log matches, or throws with the log so far. */
  async waitForLog(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = this.#log.match(re);
      if (m) return m;
      const status = await Promise.race([this.#exited, sleep(50).then(() => null)]);
      if (status && !this.#log.match(re)) {
        throw new Error(`skiff exited with ${status.code} before ${re}; log:\n${this.#log}`);
      }
    }
    throw new Error(`Timed out waiting for ${re}; log:\n${this.#log}`);
  }

  /** Sends a signal. */
  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Stops with SIGTERM (or SIGKILL) and waits for the exit. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.#child.kill(signal);
    } catch { /* gone */ }
    return await this.#exited;
  }

  /** Removes the temporary directory. */
  async cleanup(): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until fn returns a truthy value or the time is up. */
export async function waitFor<T>(
  fn: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 15_000,
  what = "condition",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Files in a Maildir's new/ (empty when it does not exist). */
export async function maildirFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(`${dir}/new`)) {
      if (e.isFile) out.push(`${dir}/new/${e.name}`);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out.sort();
}

/** A raw line-level SMTP client for scripted dialogues. */
export class RawClient {
  #socket: net.Socket;
  #buf = "";
  #closed = false;
  #wake: (() => void) | null = null;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      this.#buf += d;
      this.#wake?.();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
    socket.on("error", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  static connect(port: number, host = "127.0.0.1"): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port }, () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }

  /** Sends raw text (no CRLF added). */
  send(text: string): Promise<void> {
    return new Promise((r) => this.#socket.write(text, "latin1", () => r()));
  }

  /** Sends a line plus CRLF. */
  line(text: string): Promise<void> {
    return this.send(text + "\r\n");
  }

  /** Reads one complete reply (all its lines); null when the server closed first. */
  async reply(timeoutMs = 10_000): Promise<string[] | null> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const lines: string[] = [];
      let pos = 0;
      while (true) {
        const end = this.#buf.indexOf("\r\n", pos);
        if (end < 0) break;
        const l = this.#buf.slice(pos, end);
        lines.push(l);
        pos = end + 2;
        if (/^\d{3} /.test(l) || /^\d{3}$/.test(l)) {
          this.#buf = this.#buf.slice(pos);
          return lines;
        }
      }
      if (this.#closed) return null;
      if (Date.now() > deadline) {
        throw new Error(`No reply within ${timeoutMs} ms; buffer: ${JSON.stringify(this.#buf)}`);
      }
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 100);
      });
      this.#wake = null;
    }
  }

  /** Waits for the server to close the connection. */
  async closed(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed && Date.now() < deadline) await sleep(20);
    return this.#closed;
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** What submitMessage sends. */
export interface Submission {
  from?: string;
  to: string | string[];
  /** The whole message (CRLF line endings); it is dot-stuffed here. Default: a Subject and a body. */
  data?: string;
  subject?: string;
}

/** Submits one message over a plain SMTP session; returns skiff's queue id from the 250. */
export async function submitMessage(port: number, m: Submission): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    const expect = async (what: string, code: string) => {
      const r = await c.reply();
      if (!r || !r[r.length - 1].startsWith(code)) {
        throw new Error(
          `${what}: expected ${code}, got ${r?.join(" | ") ?? "a closed connection"}`,
        );
      }
      return r[r.length - 1];
    };
    await expect("greeting", "220");
    await c.line("EHLO client.test");
    await expect("EHLO", "250");
    await c.line(`MAIL FROM:<${m.from ?? "a@localhost"}>`);
    await expect("MAIL", "250");
    for (const to of [m.to].flat()) {
      await c.line(`RCPT TO:<${to}>`);
      await expect(`RCPT ${to}`, "250");
    }
    await c.line("DATA");
    await expect("DATA", "354");
    const subject = m.subject ?? "test";
    const data = m.data ?? `Subject: ${subject}\r\n\r\nbody of ${subject}\r\n`;
    const stuffed = data.replace(/^\./gm, "..");
    await c.send(`${stuffed}${stuffed.endsWith("\r\n") ? "" : "\r\n"}.\r\n`);
    const final = await expect("end of data", "250");
    const id = /queued as (\S+)/.exec(final)?.[1];
    if (!id) throw new Error(`No queue id in ${JSON.stringify(final)}`);
    return id;
  } finally {
    c.close();
  }
}

/** Whether anything (a file, directory, socket or dangling link) is at `path`. */
export function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

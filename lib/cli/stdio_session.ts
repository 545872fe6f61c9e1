/**
 * `sendmail -bs`: an SMTP session on stdin/stdout (symfony/mailer, PHP
 * libraries and others speak SMTP to the shim this way). With the manager
 * running, the bytes are relayed to its unix submission socket, where the
 * kernel's peer credentials identify us. Without it, the server's own
 * session runs here over stdio, as the submitting user, into a private
 * temporary spool; each accepted message is moved into the maildrop before
 * its "250" is written (writes to stdout wait for the drop), so "250"
 * still means "durable".
 */
import process from "node:process";
import { Duplex } from "node:stream";
import * as net from "node:net";
import type { Config } from "../config/types.ts";
import { dropMessage, ensureMaildrop } from "../maildrop/drop.ts";
import { Conn } from "../net/conn.ts";
import { runSession } from "../smtp/session.ts";
import { Spool } from "../spool/spool.ts";
import { EX_OK, EX_TEMPFAIL } from "../sys/exit_codes.ts";
import { submissionListener } from "./submit_target.ts";

/** Runs the -bs session; returns the exit code. */
export async function stdioSession(cfg: Config): Promise<number> {
  const target = submissionListener(cfg);
  if (target && await relayToSocket(target.path)) return EX_OK;
  return await localSession(cfg);
}

/** Pipes stdio to the submission socket; false when it cannot be reached. */
async function relayToSocket(path: string): Promise<boolean> {
  let socket: net.Socket;
  try {
    socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ path });
      s.once("connect", () => resolve(s));
      s.once("error", reject);
    });
  } catch {
    return false;
  }
  // Replies are written in order; the last one (221) must be out before we exit.
  let written: Promise<void> = Promise.resolve();
  const done = new Promise<void>((resolve) => {
    socket.on("close", () => resolve());
    socket.on("error", () => resolve());
  });
  socket.on("data", (d: Uint8Array) => {
    socket.pause();
    written = written.then(() => writeStdout(d)).then(
      () => void socket.resume(),
      () => void socket.destroy(),
    );
  });
  (async () => {
    try {
      for await (const chunk of Deno.stdin.readable) {
        if (!socket.write(chunk)) await new Promise((r) => socket.once("drain", r));
      }
    } catch { /* stdin closed */ }
    socket.end();
  })();
  await done;
  await written;
  return true;
}

async function writeStdout(d: Uint8Array): Promise<void> {
  let off = 0;
  while (off < d.length) off += await Deno.stdout.write(d.subarray(off));
}

/** A node-style socket over stdin/stdout whose writes wait for `barrier()`. */
class StdioSocket extends Duplex {
  #barrier: () => Promise<void>;
  remoteAddress = "";
  remotePort = 0;

  constructor(barrier: () => Promise<void>) {
    super();
    this.#barrier = barrier;
    (async () => {
      try {
        for await (const chunk of Deno.stdin.readable) this.push(chunk);
      } catch { /* closed */ }
      this.push(null);
    })();
  }

  setNoDelay(): this {
    return this;
  }

  override _read(): void {}

  override _write(
    chunk: Uint8Array,
    _enc: string,
    cb: (err?: Error | null) => void,
  ): void {
    this.#barrier().then(() => writeStdout(chunk)).then(() => cb(), (err) => cb(err as Error));
  }
}

async function localSession(cfg: Config): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-bs-" });
  const spool = new Spool(dir);
  await spool.init();
  await ensureMaildrop(cfg.sendmail.maildropDir);
  let pending: Promise<void> = Promise.resolve();
  let failed: Error | null = null;
  const move = async (id: string) => {
    const state = await spool.load(id);
    const { stream } = await spool.content(id);
    const content = new Uint8Array(await new Response(stream).arrayBuffer());
    const env = state.envelope;
    await dropMessage(cfg.sendmail.maildropDir, {
      from: env.from,
      recipients: env.recipients,
      ...(env.params ? { params: pickParams(env.params) } : {}),
    }, content);
    await spool.remove(id);
  };
  const socket = new StdioSocket(() => pending);
  const conn = new Conn(socket as unknown as net.Socket);
  conn.peer = { uid: Deno.uid() ?? -1, gid: Deno.gid() ?? -1, pid: Deno.pid };
  const base = submissionListener(cfg) ?? cfg.listeners[0];
  try {
    await runSession(conn, {
      config: cfg,
      listener: { ...base, auth: "peercred", tls: "none", requireAuth: false },
      spool,
      onQueued: (id) => {
        pending = pending.then(() => move(id)).catch((err) => {
          failed = err as Error;
          throw err;
        });
      },
    });
    await pending.catch(() => {});
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  if (failed) {
    process.stderr.write(`sendmail: could not write to the maildrop: ${String(failed)}\n`);
    return EX_TEMPFAIL;
  }
  return EX_OK;
}

function pickParams(p: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ["RET", "ENVID", "BODY"]) if (p[k] !== undefined) out[k] = p[k];
  return out;
}

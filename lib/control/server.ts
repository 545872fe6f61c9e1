/**
 * The control socket of a running manager (Postfix's public/qmgr and
 * showq, in one): a unix socket inside the spool directory, mode 0600, so
 * only the manager's own user (and root) can reach it. Each connection
 * carries one JSON request line and gets one JSON reply line (or, for a
 * listing, a streamed reply: StreamedReply). Requests are checked against a
 * closed set before anything runs.
 */
import * as net from "node:net";
import { closeOnExecAll } from "../sys/cloexec.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { checkRequest, type ControlReply, type ControlRequest, MAX_REQUEST } from "./protocol.ts";

/**
 * A reply sent as a stream (`queue list`): one JSON line per item as the
 * slices come, then an end line `{"ok":true,"end":true,...end()}`, or
 * `{"ok":false,"end":true,"error":...}` when the items fail midway.
 */
export class StreamedReply {
  constructor(
    /** Slices of items, each item one line. */
    readonly items: AsyncIterable<unknown[]>,
    /** What the end line carries (asked after the last item). */
    readonly end: () => Record<string, unknown>,
  ) {}
}

/** Runs one checked request; throws an Error whose message is the reply's error text. */
export type ControlHandler = (
  req: ControlRequest,
) => Promise<Record<string, unknown> | StreamedReply>;

/** A listening control socket. */
export interface ControlServer {
  path: string;
  close(): Promise<void>;
}

/** Seconds a client may take to send its request line. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Bytes a streamed reply may have written but not yet sent before it waits. */
const MAX_BUFFERED = 1024 * 1024;

/**
 * Longest a request may take to answer (the client waits 120 s), and for a
 * streamed reply the longest wait for any one slice to be taken by the client.
 */
const HANDLER_TIMEOUT_MS = 120_000;

/**
 * Listens on `path` (a leftover socket from a previous manager is removed;
 * the caller holds the spool lock, so no live manager owns it). Refuses to
 * remove anything at `path` that is not a socket.
 */
export async function startControlServer(
  path: string,
  handler: ControlHandler,
): Promise<ControlServer> {
  try {
    const st = await Deno.lstat(path);
    if (!st.isSocket) throw new Error(`${path} exists and is not a socket; not removing it`);
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    serveOne(socket, handler);
  });
  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (err: Error) => reject(new Error(`Cannot listen on control socket ${path}: ${err.message}`)),
    );
    server.listen({ path }, () => resolve());
  });
  closeOnExecAll(); // node:net listeners are not close-on-exec by themselves
  // The spool directory (0700) already keeps others out; the mode says so on the socket too.
  await Deno.chmod(path, 0o600);
  logEvent("listening", { address: `unix:${path}`, protocol: "control" });
  return {
    path,
    close: async () => {
      server.close();
      for (const s of open) s.destroy();
      await Deno.remove(path).catch(() => {});
    },
  };
}

function serveOne(socket: net.Socket, handler: ControlHandler): void {
  let buf = "";
  let done = false;
  const timer = setTimeout(() => socket.destroy(), REQUEST_TIMEOUT_MS);
  const answer = (reply: ControlReply) => {
    clearTimeout(timer);
    socket.end(JSON.stringify(reply) + "\n");
  };
  socket.setEncoding("utf8");
  socket.on("error", () => clearTimeout(timer));
  socket.on("data", (d: string) => {
    if (done) return;
    buf += d;
    const nl = buf.indexOf("\n");
    if (nl < 0) {
      if (buf.length > MAX_REQUEST) {
        done = true;
        answer({ ok: false, error: "Request too long" });
      }
      return;
    }
    done = true;
    // The request is in: from here the handler's own work is bounded by
    // HANDLER_TIMEOUT_MS, not by the time allowed to send a request (listing
    // a queue of 20,000 messages took longer than that on a busy machine).
    clearTimeout(timer);
    let slow = setTimeout(() => socket.destroy(), HANDLER_TIMEOUT_MS);
    const rearm = () => {
      clearTimeout(slow);
      slow = setTimeout(() => socket.destroy(), HANDLER_TIMEOUT_MS);
    };
    socket.on("close", () => clearTimeout(slow));
    let req: ControlRequest;
    try {
      req = checkRequest(JSON.parse(buf.slice(0, nl)));
    } catch (err) {
      answer({ ok: false, error: `Bad request: ${(err as Error).message}` });
      return;
    }
    handler(req).then(
      (result) =>
        result instanceof StreamedReply
          ? writeStream(socket, result, rearm)
          : answer({ ok: true, ...result }),
      (err) => {
        logWarn("control request failed", { cmd: req.cmd, error: String(err) });
        answer({ ok: false, error: (err as Error).message ?? String(err) });
      },
    );
  });
}

/**
 * Writes a streamed reply with backpressure: a slice is written only once
 * the socket took the previous one (at most one slice plus the socket's
 * buffer is held), and a client that goes away stops the listing.
 */
async function writeStream(
  socket: net.Socket,
  reply: StreamedReply,
  progress: () => void,
): Promise<void> {
  let gone = socket.destroyed;
  const onClose = () => gone = true;
  socket.on("close", onClose);
  const it = reply.items[Symbol.asyncIterator]();
  try {
    while (!gone) {
      const next = await it.next();
      if (next.done || gone) break;
      let chunk = "";
      for (const item of next.value) chunk += JSON.stringify(item) + "\n";
      progress();
      socket.write(chunk);
      // Bounded: past MAX_BUFFERED unsent bytes the listing waits for the
      // client. (Waiting on every write's `false` made each slice wait for a
      // round trip through both processes: twice as slow under load.)
      if (socket.writableLength > MAX_BUFFERED) await drained(socket);
    }
    if (!gone) socket.end(JSON.stringify({ ok: true, end: true, ...reply.end() }) + "\n");
  } catch (err) {
    const error = (err as Error).message ?? String(err);
    logWarn("control listing failed", { error });
    if (!gone) socket.end(JSON.stringify({ ok: false, end: true, error }) + "\n");
  } finally {
    socket.off("close", onClose);
    await it.return?.(); // a client that left midway: the listing's reads stop here
  }
}

/** Resolves when the socket wants more, or is closed. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}

/**
 * The shim's SMTP client on the manager's unix submission socket: one
 * transaction, with the DSN and BODY parameters the server advertises. The
 * server knows who we are from the kernel (SO_PEERCRED), so nothing here
 * claims an identity. Connection trouble before the message is accepted
 * is reported as "unavailable" so the caller can use the maildrop instead.
 */
import * as net from "node:net";
import { encodeXtext } from "../smtp/params.ts";

/** One message for the socket. */
export interface SocketSubmission {
  path: string;
  helo: string;
  from: string;
  recipients: string[];
  notify: string[] | null;
  ret: string | null;
  envid: string | null;
  body: string | null;
  content: Uint8Array;
  /** Called with each line sent and received (-v). */
  trace?: (line: string) => void;
}

/** What became of a submission. */
export type SocketResult =
  | { kind: "unavailable"; reason: string }
  | { kind: "accepted"; reply: string; refused: { address: string; reply: string }[] }
  | {
    kind: "rejected";
    temporary: boolean;
    reply: string;
    refused: { address: string; reply: string }[];
  };

const REPLY_TIMEOUT_MS = 120_000;

/** Submits one message on the unix socket at `s.path`. */
export async function submitOnSocket(s: SocketSubmission): Promise<SocketResult> {
  let socket: net.Socket;
  try {
    socket = await new Promise<net.Socket>((resolve, reject) => {
      const sock = net.connect({ path: s.path });
      sock.once("connect", () => resolve(sock));
      sock.once("error", reject);
    });
  } catch (err) {
    return { kind: "unavailable", reason: (err as Error).message };
  }
  const r = new Replies(socket);
  const send = async (line: string) => {
    s.trace?.(`>>> ${line}`);
    await new Promise<void>((res, rej) => socket.write(line + "\r\n", (e) => e ? rej(e) : res()));
  };
  const next = async () => {
    const rep = await r.next();
    s.trace?.(`<<< ${rep.text.replace(/\r\n(?!$)/g, "\n<<< ").trimEnd()}`);
    return rep;
  };
  const refused: { address: string; reply: string }[] = [];
  let stage = "greeting";
  try {
    let rep = await next();
    if (rep.code !== 220) return { kind: "unavailable", reason: rep.text.trim() };
    stage = "EHLO";
    await send(`EHLO ${s.helo}`);
    rep = await next();
    if (rep.code !== 250) return { kind: "unavailable", reason: rep.text.trim() };
    const ext = new Set(rep.lines.slice(1).map((l) => l.split(" ")[0].toUpperCase()));
    const dsn = ext.has("DSN");
    let mail = `MAIL FROM:<${s.from}>`;
    if (s.body && ext.has("8BITMIME")) mail += ` BODY=${s.body}`;
    if (dsn && s.ret) mail += ` RET=${s.ret}`;
    if (dsn && s.envid) mail += ` ENVID=${encodeXtext(s.envid)}`;
    stage = "MAIL";
    await send(mail);
    rep = await next();
    if (rep.code !== 250) return rejected(rep, refused);
    let accepted = 0;
    for (const rcpt of s.recipients) {
      let line = `RCPT TO:<${rcpt}>`;
      if (dsn && s.notify) line += ` NOTIFY=${s.notify.join(",")}`;
      stage = "RCPT";
      await send(line);
      rep = await next();
      if (rep.code === 250 || rep.code === 251) accepted++;
      else refused.push({ address: rcpt, reply: rep.text.trim() });
    }
    if (accepted === 0) return rejected(rep, refused);
    stage = "DATA";
    await send("DATA");
    rep = await next();
    if (rep.code !== 354) return rejected(rep, refused);
    stage = "message data";
    await new Promise<void>((res, rej) =>
      socket.write(dotStuff(s.content), (e) => e ? rej(e) : res())
    );
    s.trace?.(">>> (message) .");
    rep = await next();
    if (rep.code !== 250) return rejected(rep, refused);
    await send("QUIT").catch(() => {});
    return { kind: "accepted", reply: rep.text.trim(), refused };
  } catch (err) {
    // Before the final reply nothing was accepted: the maildrop can still take it.
    return { kind: "unavailable", reason: `${(err as Error).message} during ${stage}` };
  } finally {
    socket.destroy();
  }
}

function rejected(
  rep: { code: number; text: string },
  refused: { address: string; reply: string }[],
): SocketResult {
  return {
    kind: "rejected",
    temporary: rep.code >= 400 && rep.code < 500,
    reply: rep.text.trim(),
    refused,
  };
}

/** The content as SMTP DATA (RFC 5321 §4.5.2): leading dots doubled, then CRLF.CRLF. */
function dotStuff(content: Uint8Array): Uint8Array {
  const out: number[] = [];
  let lineStart = true;
  for (const b of content) {
    if (lineStart && b === 46) out.push(46);
    out.push(b);
    lineStart = b === 10;
  }
  if (!lineStart) out.push(13, 10);
  out.push(46, 13, 10);
  return new Uint8Array(out);
}

/** Reads complete SMTP replies off a socket. */
class Replies {
  #buf = "";
  #waiter: (() => void) | null = null;
  #ended = false;

  constructor(socket: net.Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      this.#buf += d;
      this.#waiter?.();
    });
    const end = () => {
      this.#ended = true;
      this.#waiter?.();
    };
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
  }

  async next(): Promise<{ code: number; lines: string[]; text: string }> {
    const deadline = Date.now() + REPLY_TIMEOUT_MS;
    while (true) {
      const lines: string[] = [];
      let pos = 0;
      while (true) {
        const nl = this.#buf.indexOf("\r\n", pos);
        if (nl < 0) break;
        const line = this.#buf.slice(pos, nl);
        lines.push(line.slice(4));
        pos = nl + 2;
        if (line[3] !== "-") {
          const text = this.#buf.slice(0, pos);
          this.#buf = this.#buf.slice(pos);
          return { code: Number(line.slice(0, 3)), lines, text };
        }
      }
      if (this.#ended) throw new Error("Connection closed");
      if (Date.now() > deadline) throw new Error("No reply in time");
      await new Promise<void>((r) => {
        this.#waiter = r;
        setTimeout(r, 1000);
      });
      this.#waiter = null;
    }
  }
}

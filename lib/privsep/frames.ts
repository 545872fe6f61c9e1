/**
 * The framing between the manager and the privileged helper, over the
 * helper's stdin and stdout pipes. Each frame is a 4-byte big-endian body
 * length, then the body: one type byte, a 4-byte channel number (one per
 * child, so several children share the pipes) and the payload — raw bytes
 * for stdin/stdout data, a JSON object for everything else. Bodies are
 * bounded (MAX_BODY); a longer length, an unknown type or a malformed JSON
 * payload is a protocol error, and the helper treats its peer as broken and
 * exits rather than guess.
 */
import { concatBytes } from "../sys/bytes.ts";

/** Largest payload of one frame; data is split into frames of at most this. */
export const MAX_PAYLOAD = 64 * 1024;
const HEADER = 5;
const MAX_BODY = HEADER + MAX_PAYLOAD;

/** Frame types. Manager → helper: 1-15; helper → manager: 16 and up. */
export const T = {
  /** {kind, argv?, user: {name, uid, gid}} */
  SPAWN: 1,
  STDIN: 2,
  STDIN_EOF: 3,
  /** {signal: "SIGTERM" | "SIGKILL"} */
  KILL: 4,
  /** Re-read the config file (channel 0). */
  RELOAD: 5,
  /** Channel 0, once the helper has loaded its config: {pid}. */
  READY: 16,
  /** {pid} */
  SPAWNED: 17,
  /** {error} */
  REFUSED: 18,
  STDOUT: 19,
  STDOUT_EOF: 20,
  /** {code, signal, stderr} */
  EXIT: 21,
  /** One STDIN frame was written to the child (or the child is gone): the next may come. */
  STDIN_ACK: 22,
  /** {ok, error?} */
  RELOADED: 23,
} as const;

/** One decoded frame. */
export interface Frame {
  type: number;
  channel: number;
  payload: Uint8Array;
}

/** Encodes one frame; throws when the payload is too large. */
export function encodeFrame(type: number, channel: number, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_PAYLOAD) throw new Error(`Frame payload of ${payload.length} bytes`);
  const out = new Uint8Array(4 + HEADER + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, HEADER + payload.length);
  v.setUint8(4, type);
  v.setUint32(5, channel);
  out.set(payload, 4 + HEADER);
  return out;
}

/** Encodes a frame with a JSON payload. */
export function jsonFrame(type: number, channel: number, value: unknown): Uint8Array {
  return encodeFrame(type, channel, new TextEncoder().encode(JSON.stringify(value)));
}

/** Parses a JSON payload that must be an object; throws a clear error otherwise. */
export function jsonPayload(f: Frame): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(f.payload));
  } catch {
    throw new Error(`Frame type ${f.type} has a payload that is not JSON`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new Error(`Frame type ${f.type} has a payload that is not an object`);
  }
  return v as Record<string, unknown>;
}

/** Reads frames from a byte stream; throws on a malformed length, ends at a clean EOF. */
export async function* readFrames(stream: ReadableStream<Uint8Array>): AsyncGenerator<Frame> {
  let buf: Uint8Array = new Uint8Array(0);
  for await (const chunk of stream) {
    buf = buf.length === 0 ? chunk : concatBytes([buf, chunk]);
    while (buf.length >= 4) {
      const len = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0);
      if (len < HEADER || len > MAX_BODY) throw new Error(`Frame length ${len} out of bounds`);
      if (buf.length < 4 + len) break;
      const v = new DataView(buf.buffer, buf.byteOffset + 4, HEADER);
      yield {
        type: v.getUint8(0),
        channel: v.getUint32(1),
        payload: buf.slice(4 + HEADER, 4 + len),
      };
      buf = buf.subarray(4 + len);
    }
  }
  if (buf.length > 0) throw new Error(`Stream ended inside a frame (${buf.length} bytes left)`);
}

/** Serialises writes of whole frames to one writer. */
export class FrameWriter {
  #chain: Promise<void> = Promise.resolve();
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  constructor(stream: WritableStream<Uint8Array>) {
    this.#writer = stream.getWriter();
  }
  /** Queues one frame; resolves when written (rejects when the pipe broke). */
  send(frame: Uint8Array): Promise<void> {
    const run = this.#chain.then(() => this.#writer.write(frame));
    this.#chain = run.catch(() => {});
    return run;
  }
  async close(): Promise<void> {
    await this.#chain;
    await this.#writer.close().catch(() => {});
  }
}

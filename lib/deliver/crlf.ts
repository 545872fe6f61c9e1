/**
 * CRLF to LF while streaming, for the local deliveries (Maildir, mbox, pipe):
 * the spool keeps messages as they travel, with CRLF, while files and
 * commands on this host expect Unix text (Postfix's local(8) and pipe(8) do
 * the same). A CR not followed by LF is kept as it is. One module because all
 * three agents use it.
 */

const CR = 0x0d;
const LF = 0x0a;
const EMPTY = new Uint8Array(0);

/**
 * Turns CRLF into LF across a stream of chunks, including a CR that ends one
 * chunk and an LF that starts the next. A lone CR is passed through.
 */
export class CrlfToLf {
  #pendingCr = false;

  /** Converts one chunk; may hold back a trailing CR until the next chunk or flush(). */
  push(chunk: Uint8Array): Uint8Array {
    if (chunk.length === 0) return EMPTY;
    let start = 0;
    const out = new Uint8Array(chunk.length + 1);
    let o = 0;
    if (this.#pendingCr) {
      this.#pendingCr = false;
      if (chunk[0] === LF) {
        out[o++] = LF;
        start = 1;
      } else {
        out[o++] = CR;
      }
    } else if (chunk.indexOf(CR) < 0) {
      return chunk;
    }
    for (;;) {
      const cr = chunk.indexOf(CR, start);
      const end = cr < 0 ? chunk.length : cr;
      out.set(chunk.subarray(start, end), o);
      o += end - start;
      if (cr < 0) break;
      if (cr === chunk.length - 1) {
        this.#pendingCr = true;
        break;
      }
      if (chunk[cr + 1] === LF) {
        out[o++] = LF;
        start = cr + 2;
      } else {
        out[o++] = CR;
        start = cr + 1;
      }
    }
    return out.subarray(0, o);
  }

  /** Returns what is held back at the end of the stream (a final lone CR). */
  flush(): Uint8Array {
    if (!this.#pendingCr) return EMPTY;
    this.#pendingCr = false;
    return Uint8Array.of(CR);
  }
}

/**
 * Queue ids name spool files, so they are generated here and never taken from
 * client input; every name read back from disk is checked with isQueueId
 * before it is joined into a path. Ids sort by creation time so `ls queue/`
 * lists the oldest mail first.
 */

/** Crockford base32: digits and capitals without I, L, O, U; ASCII order. */
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_CHARS = 12;
const RANDOM_CHARS = 5;
/** Bits of the time part that count ids within one millisecond. */
const SEQ_BITS = 18;
const SEQ_LIMIT = 2 ** SEQ_BITS;

/** Length of every queue id. */
export const QUEUE_ID_LENGTH = TIME_CHARS + RANDOM_CHARS;

const ID_PATTERN = new RegExp(`^[0-9A-Z]{${QUEUE_ID_LENGTH}}$`);

let lastMs = 0;
let seq = 0;

/**
 * A new queue id: 12 base32 characters of time (42 bits of epoch
 * milliseconds, good until 2109, then an 18-bit per-process sequence so ids
 * made in the same millisecond still sort in creation order) followed by 5
 * random characters, so two processes never pick the same name in practice
 * (the spool also creates files with O_EXCL).
 */
export function newQueueId(): string {
  const now = Date.now();
  if (now > lastMs) {
    lastMs = now;
    seq = 0;
  } else if (++seq >= SEQ_LIMIT) {
    lastMs++;
    seq = 0;
  }
  // 42 + 18 = 60 bits is more than a double holds exactly: use a bigint.
  const value = BigInt(lastMs) * BigInt(SEQ_LIMIT) + BigInt(seq);
  let time = "";
  let v = value;
  for (let i = 0; i < TIME_CHARS; i++) {
    time = ALPHABET[Number(v & 31n)] + time;
    v >>= 5n;
  }
  const bytes = crypto.getRandomValues(new Uint8Array(RANDOM_CHARS));
  let rand = "";
  for (const b of bytes) rand += ALPHABET[b & 31];
  return time + rand;
}

/**
 * True when `s` is safe to use as a spool file name: exactly 17 characters
 * of `[0-9A-Z]`. Generated ids use the Crockford subset, but any capital is
 * accepted since the check guards paths, not provenance.
 */
export function isQueueId(s: string): boolean {
  return ID_PATTERN.test(s);
}

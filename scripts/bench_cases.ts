/**
 * The benchmark's cases (issue 13): the matrix that has targets against
 * Postfix, and the growth table that shows how the per-message cost moves
 * with message size and recipient count. Kept apart from bench.ts so the
 * list can be read (and trimmed for --quick) in one place.
 */

/** One smtp-source load against both MTAs. */
export interface Case {
  /** Short key for notes and directory names. */
  id: string;
  /** Row label in the report. */
  label: string;
  /**
   * accept: relayhost is a closed port (queue and defer); relay: end to end
   * to smtp-sink; local: end to end into one local user's Maildir.
   */
  kind: "accept" | "relay" | "local";
  sessions: number;
  /** Message body length given to smtp-source -l, bytes. */
  size: number;
  /** Recipients per message (smtp-source -r). */
  rcpts: number;
  /** Messages in the run. */
  count: number;
  /** The issue's target for skiff/Postfix, or null (growth rows). */
  target: number | null;
}

const KB = 1024;
const MB = 1024 * 1024;

/** Messages in a run of `size`-byte messages, scaled from the 2 KB count to at most ~150 MB. */
function scaled(base: number, size: number, quick: boolean): number {
  if (size <= 4 * KB) return base;
  // Each run's spool must fit the --journaled image (400 MB) with room to spare.
  const budget = quick ? 4 * MB : 150 * MB;
  return Math.max(quick ? 4 : 10, Math.min(base, Math.floor(budget / size)));
}

/** The matrix of issue 13, each row with its target ratio. */
export function matrixCases(count: number, quick: boolean, journaled = false): Case[] {
  // Issue 13: 2x at 20 and 100 sessions on a journaled ext4, 1.5x on the root file system.
  const many = journaled ? 2 : 1.5;
  const c = (o: Omit<Case, "rcpts" | "count"> & { rcpts?: number }): Case => ({
    rcpts: 1,
    count: scaled(count, o.size, quick),
    ...o,
  });
  return [
    c({
      id: "s1",
      label: "accept, 1 session, 2 KB",
      kind: "accept",
      sessions: 1,
      size: 2 * KB,
      target: 1,
    }),
    c({
      id: "s20",
      label: "accept, 20 sessions, 2 KB",
      kind: "accept",
      sessions: 20,
      size: 2 * KB,
      target: many,
    }),
    c({
      id: "s100",
      label: "accept, 100 sessions, 2 KB",
      kind: "accept",
      sessions: 100,
      size: 2 * KB,
      target: many,
    }),
    c({
      id: "k100",
      label: "accept, 10 sessions, 100 KB",
      kind: "accept",
      sessions: 10,
      size: 100 * KB,
      target: 1.5,
    }),
    c({
      id: "m1",
      label: "accept, 10 sessions, 1 MB",
      kind: "accept",
      sessions: 10,
      size: MB,
      target: 1.5,
    }),
    c({
      id: "relay",
      label: "relay end to end to smtp-sink, 20 sessions, 2 KB",
      kind: "relay",
      sessions: 20,
      size: 2 * KB,
      target: 2,
    }),
    c({
      id: "local",
      label: "local Maildir delivery end to end, 20 sessions, 2 KB",
      kind: "local",
      sessions: 20,
      size: 2 * KB,
      target: 1.5,
    }),
  ];
}

/** Per-message cost against size and recipients (accept runs, 10 sessions). */
export function growthCases(count: number, quick: boolean): Case[] {
  // --quick: the matrix already covers 2 KB to 1 MB; only the recipients row is added.
  const sizes = quick ? [] : [2 * KB, 100 * KB, MB, 10_000_000];
  const out: Case[] = sizes.map((size) => ({
    id: `g${size}`,
    label: `size ${
      size >= 10_000_000 ? "10 MB" : size >= MB ? "1 MB" : `${size / KB} KB`
    }, 1 recipient`,
    kind: "accept",
    sessions: 10,
    size,
    rcpts: 1,
    count: scaled(count, size, quick),
    target: null,
  }));
  for (const rcpts of quick ? [10] : [10, 100]) {
    out.push({
      id: `r${rcpts}`,
      label: `size 2 KB, ${rcpts} recipients`,
      kind: "accept",
      sessions: 10,
      size: 2 * KB,
      rcpts,
      count: Math.max(quick ? 20 : 100, Math.floor(count / (rcpts / 5))),
      target: null,
    });
  }
  return out;
}

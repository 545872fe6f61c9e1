/**
 * Writes queued messages straight into a spool (scripts/bench_startup.ts
 * fills its backlog with it too): real spool files (header, content, journal), each
 * deferred for an hour so a manager started on them leaves them alone.
 * Tests of the queue listing use it for queues of thousands of messages
 * that would take minutes to submit over SMTP.
 */
import { encodeRecords, formatHeader, HEADER_LENGTH, newQueueId } from "../lib/spool/mod.ts";

const enc = new TextEncoder();

/** Options of a fill. */
export interface FillOptions {
  /** Into hold/ instead of queue/. */
  held?: boolean;
  /** Body bytes per message (default 200). */
  size?: number;
}

/** Writes `n` deferred messages; returns their ids in creation (= listing) order. */
export function fillSpool(spoolDir: string, n: number, opts: FillOptions = {}): string[] {
  const dir = `${spoolDir}/${opts.held ? "hold" : "queue"}`;
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  Deno.mkdirSync(`${spoolDir}/incoming`, { recursive: true, mode: 0o700 });
  const body = enc.encode("Subject: backlog\r\n\r\n" + "x".repeat(opts.size ?? 200) + "\r\n");
  const now = Date.now();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = newQueueId();
    ids.push(id);
    const journal = encodeRecords([
      {
        t: "envelope",
        id,
        from: "a@localhost",
        recipients: [{ address: `user${i}@example.net` }],
        received: now,
        client: { address: "127.0.0.1", helo: "test" },
        protocol: "ESMTP",
        size: body.length,
      },
      {
        t: "deferred",
        rcpt: 0,
        at: now,
        until: now + 3600_000,
        dsn: "4.4.1",
        text: `connect refused (test backlog ${i})`,
      },
    ]);
    const header = enc.encode(formatHeader({
      content: HEADER_LENGTH,
      length: body.length,
      journal: HEADER_LENGTH + body.length,
    }));
    const file = new Uint8Array(header.length + body.length + journal.length);
    file.set(header);
    file.set(body, header.length);
    file.set(journal, header.length + body.length);
    Deno.writeFileSync(`${dir}/${id}`, file, { mode: 0o600 });
  }
  return ids;
}

/** Writes a file with a queue id's name whose journal is not JSON; returns the id. */
export function writeCorrupt(spoolDir: string, id: string): string {
  const body = enc.encode("Subject: x\r\n\r\nx\r\n");
  const journal = enc.encode('{"t":"envelope","id":\x1b[31m not json\n');
  const header = enc.encode(formatHeader({
    content: HEADER_LENGTH,
    length: body.length,
    journal: HEADER_LENGTH + body.length,
  }));
  const file = new Uint8Array([...header, ...body, ...journal]);
  Deno.writeFileSync(`${spoolDir}/queue/${id}`, file, { mode: 0o600 });
  return id;
}

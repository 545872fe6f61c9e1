/**
 * The durable spool: where accepted mail lives until every recipient has a
 * final result. The SMTP session writes through Spool.begin/SpoolWriter; the
 * queue manager and delivery workers read and append through Spool.
 */

export { isQueueId, newQueueId, QUEUE_ID_LENGTH } from "./queue_id.ts";
export {
  encodeRecords,
  type Envelope,
  JournalError,
  type JournalRecord,
  type MessageState,
  parseJournal,
  type RecipientSpec,
  type RecipientState,
  type RecipientStatus,
  replay,
  TORN_MARK,
} from "./records.ts";
export { DirSyncer, syncDir, writeAll, writeFileDurably } from "./durable.ts";
export {
  formatHeader,
  HEADER_LENGTH,
  parseHeader,
  Spool,
  SpoolCorruptError,
  type SpoolHeader,
  type SpoolOptions,
  SpoolWriter,
} from "./spool.ts";

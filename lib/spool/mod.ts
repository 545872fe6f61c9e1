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
  mustSync,
  parseJournal,
  type RecipientSpec,
  type RecipientState,
  type RecipientStatus,
  replay,
  TORN_MARK,
} from "./records.ts";
export { DirSyncer, syncDir, writeAll, writeFileDurably } from "./durable.ts";
export {
  checkSeal,
  formatHeader,
  HEADER_LENGTH,
  parseHeader,
  reseal,
  SEALED_HEADER_LENGTH,
  sealOf,
  Spool,
  SpoolCorruptError,
  type SpoolHeader,
  type SpoolOptions,
  SpoolTornError,
  SpoolWriter,
} from "./spool.ts";

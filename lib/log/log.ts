/**
 * Mail log: one line per event an operator greps for, keyed by queue id, in
 * a stable key=value form like Postfix's mail log
 * (`... info delivered id=... to=<...> relay=... delay=... dsn=... status=sent`),
 * or one JSON object per line when configured. Built on @logtape/logtape.
 */
import { configure, getLogger, type LogRecord, reset } from "@logtape/logtape";
import type { LogConfig } from "../config/types.ts";

/** Values a log field may hold. */
export type LogValue = string | number | boolean | undefined | null;

/** Renders one field value so that it stays on one line and is unambiguous to grep. */
function formatValue(v: unknown): string {
  const s = String(v);
  // Quote values with spaces, quotes or control characters; never let a CR/LF split a line.
  // deno-lint-ignore no-control-regex
  if (/^[^\s"=\\\x00-\x1f\x7f]*$/.test(s) && s !== "") return s;
  return JSON.stringify(s);
}

/** Formats a record as `TIMESTAMP LEVEL EVENT k=v k=v`. */
export function formatText(record: LogRecord): string {
  const ts = new Date(record.timestamp).toISOString();
  const event = record.message.map((m) => String(m)).join("");
  const fields = Object.entries(record.properties)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${formatValue(v)}`)
    .join(" ");
  return `${ts} ${record.level} ${event}${fields ? " " + fields : ""}\n`;
}

/** Formats a record as one JSON object. */
export function formatJson(record: LogRecord): string {
  const event = record.message.map((m) => String(m)).join("");
  return JSON.stringify({
    ts: new Date(record.timestamp).toISOString(),
    level: record.level,
    event,
    ...record.properties,
  }) + "\n";
}

const encoder = new TextEncoder();

/** The manager's log file ([log] file), when it writes one; else lines go to stderr. */
let logFile: { path: string; owner?: { uid: number; gid: number }; file: Deno.FsFile } | null =
  null;

function openLogFile(path: string, owner?: { uid: number; gid: number }): Deno.FsFile {
  const file = Deno.openSync(path, { append: true, create: true, mode: 0o640 });
  // Created by root before the switch to skiff's user: give it to that user, who reopens it.
  if (owner && Deno.uid() === 0) Deno.chownSync(path, owner.uid, owner.gid);
  return file;
}

/**
 * Reopens the log file (SIGHUP, `skiff reload`): after logrotate moved it
 * away, lines go to a new file of the same name. Keeps the old one on error.
 */
export function reopenLogFile(): string | null {
  if (!logFile) return null;
  try {
    const fresh = openLogFile(logFile.path, logFile.owner);
    const old = logFile.file;
    logFile = { ...logFile, file: fresh };
    old.close();
    return null;
  } catch (err) {
    return `Cannot reopen ${logFile.path}: ${(err as Error).message}`;
  }
}

/**
 * Sets up logging in the configured format. Call once per process. Only the
 * manager (`file: true`) writes [log] file; every other process writes
 * stderr (the manager records what its children print), except a pooled
 * worker, which hands each line to `capture` to send back with its job's
 * report (lib/worker/child.ts).
 */
export async function setupLogging(
  cfg: LogConfig,
  opts: {
    process?: string;
    file?: boolean;
    owner?: { uid: number; gid: number };
    capture?: (level: string, line: () => string) => void;
  } = {},
): Promise<void> {
  const format = cfg.format === "json" ? formatJson : formatText;
  const proc = opts.process;
  if (opts.file && cfg.file) {
    logFile = { path: cfg.file, owner: opts.owner, file: openLogFile(cfg.file, opts.owner) };
  }
  await reset();
  await configure({
    reset: true,
    sinks: {
      stderr: (record: LogRecord) => {
        const rec = proc ? { ...record, properties: { ...record.properties, proc } } : record;
        if (opts.capture) return opts.capture(record.level, () => format(rec));
        const bytes = encoder.encode(format(rec));
        if (logFile) logFile.file.writeSync(bytes);
        else Deno.stderr.writeSync(bytes);
      },
    },
    loggers: [
      { category: ["skiff"], lowestLevel: cfg.level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

const logger = getLogger(["skiff"]);

/** Logs one mail event at info level: `event k=v ...`. */
export function logEvent(event: string, fields: Record<string, LogValue> = {}): void {
  logger.info(event, fields);
}

/** Logs a warning event. */
export function logWarn(event: string, fields: Record<string, LogValue> = {}): void {
  logger.warn(event, fields);
}

/** Logs an error event. */
export function logError(event: string, fields: Record<string, LogValue> = {}): void {
  logger.error(event, fields);
}

/** Logs a debug event. */
export function logDebug(event: string, fields: Record<string, LogValue> = {}): void {
  logger.debug(event, fields);
}

/** Formats a delay in seconds the way Postfix does (one decimal). */
export function delaySeconds(fromMs: number, toMs: number): string {
  return ((toMs - fromMs) / 1000).toFixed(1);
}

/**
 * ~/.forward, read by the worker running as the user it belongs to (never by
 * the manager, which may be root): opened without following a symlink or
 * blocking on a FIFO, and used only when the open descriptor is a regular
 * file with one link, owned by the user or root and not writable by group
 * or others — the checks of Postfix's local(8) and sendmail. `:include:`
 * files named in it get the same checks. A refused file is reported with
 * its reason only; its content is never logged, bounced or queued (a parse
 * error names the line number, not the text), and mail then goes to the
 * mailbox, as sendmail does with an unsafe .forward.
 */
import { type AliasTarget, parseTarget, splitTargets } from "../route/aliases.ts";
import { safeReadFile, UnsafeFileError } from "../sys/safe_open.ts";
import { type ForwardTarget, MAX_FORWARD_TARGETS } from "./protocol.ts";

/** Largest .forward or :include: file read, in bytes. */
export const MAX_FORWARD_BYTES = 64 * 1024;
/** Deepest :include: nesting followed from a .forward. */
const MAX_INCLUDE_DEPTH = 5;
/** Most JSON the targets may take in the report (the manager reads at most 64 KiB of it). */
const MAX_TARGET_JSON = 32 * 1024;

/** What a .forward check found. */
export type ForwardCheck =
  | { kind: "targets"; targets: ForwardTarget[] }
  | { kind: "none"; refused?: string };

/** Opens and parses a .forward; `owner` (besides root) may own it. */
export async function checkForward(path: string, owner: number): Promise<ForwardCheck> {
  try {
    const targets = await readTargets(path, owner, 0);
    if (JSON.stringify(targets).length > MAX_TARGET_JSON) {
      throw new UnsafeFileError(path, `lists more than ${MAX_TARGET_JSON} bytes of targets`);
    }
    return targets.length === 0 ? { kind: "none" } : { kind: "targets", targets };
  } catch (err) {
    if (err instanceof UnsafeFileError) return { kind: "none", refused: err.message };
    const code = (err as { code?: string }).code;
    // Never the file's text: only what kind of trouble, and where.
    return { kind: "none", refused: `Refused ${path}: ${code ?? (err as Error).message}` };
  }
}

async function readTargets(path: string, owner: number, depth: number): Promise<ForwardTarget[]> {
  const read = await safeReadFile(path, {
    limit: MAX_FORWARD_BYTES,
    owners: [owner, 0],
    noGroupOtherWrite: true,
  });
  if (read === null) return [];
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(read.bytes);
  } catch {
    throw new UnsafeFileError(path, "not UTF-8 text");
  }
  const out: ForwardTarget[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, "");
    if (line.trim().startsWith("#")) continue;
    for (const item of splitTargets(line)) {
      let t: AliasTarget;
      try {
        t = parseTarget(item);
      } catch {
        throw new UnsafeFileError(path, `line ${i + 1} is not a valid target`);
      }
      if (t.kind === "include") {
        if (depth >= MAX_INCLUDE_DEPTH || !t.path.startsWith("/")) {
          throw new UnsafeFileError(path, `line ${i + 1}: :include: too deep or not absolute`);
        }
        out.push(...await readTargets(t.path, owner, depth + 1));
      } else out.push(t);
      if (out.length > MAX_FORWARD_TARGETS) {
        throw new UnsafeFileError(path, `more than ${MAX_FORWARD_TARGETS} targets`);
      }
    }
  }
  return out;
}

/**
 * The maildrop file: what the sendmail shim leaves when no manager runs.
 * A first line `skiff-maildrop 1`, one JSON line with the envelope the user
 * asked for, then the message as CRLF lines. Nothing in it is trusted for
 * identity: the pickup takes the sender's identity from the file's owner.
 * Completeness is the owner-execute bit (set last, after fdatasync), as in
 * Postfix's queue files, so a half-written drop is never picked up.
 */
import type { RecipientSpec } from "../spool/records.ts";

/** The envelope a submitter asked for. */
export interface DropEnvelope {
  /** Envelope sender as given (-f), "" for the null sender. */
  from: string;
  recipients: RecipientSpec[];
  /** RET, ENVID, BODY (RFC 3461, RFC 6152). */
  params?: Record<string, string>;
}

const MAGIC = "skiff-maildrop 1\n";
const encoder = new TextEncoder();

/** The file bytes for an envelope and message content. */
export function encodeDrop(env: DropEnvelope, content: Uint8Array): Uint8Array {
  const head = encoder.encode(MAGIC + JSON.stringify(env) + "\n");
  const out = new Uint8Array(head.length + content.length);
  out.set(head);
  out.set(content, head.length);
  return out;
}

/** Parses a maildrop file; throws an Error naming what is wrong. */
export function decodeDrop(bytes: Uint8Array): { envelope: DropEnvelope; content: Uint8Array } {
  const magic = encoder.encode(MAGIC);
  if (bytes.length < magic.length || !magic.every((b, i) => bytes[i] === b)) {
    throw new Error("Not a maildrop file (bad first line)");
  }
  const nl = bytes.indexOf(10, magic.length);
  if (nl < 0) throw new Error("Maildrop file has no envelope line");
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(bytes.subarray(magic.length, nl)));
  } catch {
    throw new Error("Maildrop envelope line is not JSON");
  }
  return { envelope: checkEnvelope(v), content: bytes.subarray(nl + 1) };
}

function checkEnvelope(v: unknown): DropEnvelope {
  const bad = (what: string): never => {
    throw new Error(`Maildrop envelope has a bad ${what}`);
  };
  if (typeof v !== "object" || v === null) return bad("shape");
  const e = v as Record<string, unknown>;
  if (typeof e.from !== "string") bad("from");
  if (!Array.isArray(e.recipients) || e.recipients.length === 0) bad("recipients");
  const recipients: RecipientSpec[] = (e.recipients as unknown[]).map((r) => {
    if (typeof r !== "object" || r === null) return bad("recipient");
    const x = r as Record<string, unknown>;
    if (typeof x.address !== "string" || x.address === "") return bad("recipient address");
    if (x.notify !== undefined) {
      if (!Array.isArray(x.notify) || !x.notify.every((n) => typeof n === "string")) {
        bad("notify");
      }
    }
    return {
      address: x.address,
      ...(x.notify ? { notify: x.notify as string[] } : {}),
    };
  });
  let params: Record<string, string> | undefined;
  if (e.params !== undefined) {
    if (typeof e.params !== "object" || e.params === null) bad("params");
    params = {};
    for (const [k, val] of Object.entries(e.params as Record<string, unknown>)) {
      if (!["RET", "ENVID", "BODY"].includes(k) || typeof val !== "string") bad(`param ${k}`);
      params[k] = val as string;
    }
  }
  return { from: e.from as string, recipients, ...(params ? { params } : {}) };
}

/**
 * Aliases in the classic /etc/aliases format (aliases(5)): `name: target,
 * target`, continuation lines start with white space, `#` comments; a
 * target is another address or local name, `|command args` (run without a
 * shell), `/path/file` (an mbox appended to), or `:include:/path` (more
 * targets, one file). `skiff newaliases` compiles the file to `FILE.json`,
 * which the queue manager reads; .forward files use the same target syntax.
 *
 * Loops: a name that lists itself (`bob: bob, bob@elsewhere`, the usual
 * "keep a copy") means its own mailbox; any other cycle, or nesting deeper
 * than MAX_DEPTH, fails with 5.4.6 (RFC 3463 "routing loop detected").
 */
import { DeliveryError } from "../deliver/errors.ts";

/** One alias target after parsing. */
export type AliasTarget =
  | { kind: "address"; address: string }
  | { kind: "pipe"; command: string[] }
  | { kind: "file"; path: string }
  | { kind: "include"; path: string };

/** Name (lower case local part) → targets. */
export type AliasTable = Map<string, AliasTarget[]>;

/** Deepest nesting of aliases followed. */
export const MAX_DEPTH = 20;
/** Most targets one expansion may produce. */
export const MAX_TARGETS = 1000;

/** Splits a command at white space, honouring double quotes (never a shell). */
export function splitCommand(text: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of text.matchAll(re)) {
    out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]);
  }
  return out;
}

/** Splits a right-hand side at commas outside double quotes. */
export function splitTargets(rhs: string): string[] {
  const out: string[] = [];
  let cur = "", quoted = false;
  for (const ch of rhs) {
    if (ch === '"') quoted = !quoted;
    if (ch === "," && !quoted) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter((s) => s !== "");
}

/** Parses one target. */
export function parseTarget(text: string): AliasTarget {
  let t = text.trim();
  if (t.startsWith('"') && t.endsWith('"') && t.length >= 2) t = t.slice(1, -1).trim();
  if (t.startsWith("|")) {
    const command = splitCommand(t.slice(1).trim());
    if (command.length === 0 || !command[0].startsWith("/")) {
      throw new Error(`Command ${JSON.stringify(t)} must start with an absolute path`);
    }
    return { kind: "pipe", command };
  }
  if (t.toLowerCase().startsWith(":include:")) return { kind: "include", path: t.slice(9).trim() };
  if (t.startsWith("/")) return { kind: "file", path: t };
  if (/[\s<>]/.test(t) || t === "") throw new Error(`Bad alias target ${JSON.stringify(t)}`);
  return { kind: "address", address: t };
}

/** Parses aliases(5) text; errors name the line. */
export function parseAliases(text: string, file = "aliases"): AliasTable {
  const table: AliasTable = new Map();
  const logical: [number, string][] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "");
    if (/^\s*#/.test(line) || line.trim() === "") return;
    if (/^\s/.test(line) && logical.length > 0) logical[logical.length - 1][1] += " " + line.trim();
    else logical.push([i + 1, line]);
  });
  for (const [n, line] of logical) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`${file}:${n}: expected "name: target, ..."`);
    const name = line.slice(0, colon).trim().replace(/^"|"$/g, "").toLowerCase();
    try {
      table.set(name, splitTargets(line.slice(colon + 1)).map(parseTarget));
    } catch (e) {
      throw new Error(`${file}:${n}: ${(e as Error).message}`);
    }
  }
  return table;
}

/** A flattened target, ready to route. */
export type Expanded =
  | { kind: "address"; address: string; mailbox: boolean }
  | { kind: "pipe"; command: string[] }
  | { kind: "file"; path: string };

/** Reads an :include: file (injectable for tests). */
export type IncludeReader = (path: string) => string;

/**
 * Expands a local name through the table; null when it is no alias. Local
 * targets (no "@", or `isLocal`) are expanded again; `mailbox` marks a name
 * that listed itself. Throws DeliveryError 5.4.6 on a loop or a too-deep or
 * too-wide expansion.
 */
export function expandAlias(
  table: AliasTable,
  name: string,
  opts: { isLocal: (address: string) => { local: string } | null; readInclude: IncludeReader },
): Expanded[] | null {
  const start = name.toLowerCase();
  if (!table.has(start)) return null;
  const out: Expanded[] = [];
  const seen = new Set<string>();
  const walk = (key: string, targets: AliasTarget[], path: string[], depth: number) => {
    if (depth > MAX_DEPTH) {
      throw loop(`Alias nesting deeper than ${MAX_DEPTH}: ${path.join(" -> ")}`);
    }
    for (const t of targets) {
      if (out.length > MAX_TARGETS) {
        throw loop(`Alias ${start} expands to more than ${MAX_TARGETS}`);
      }
      if (t.kind === "pipe" || t.kind === "file") {
        out.push(t);
        continue;
      }
      if (t.kind === "include") {
        const text = opts.readInclude(t.path);
        const inner = text.split("\n").flatMap((l) =>
          l.trim().startsWith("#") ? [] : splitTargets(l)
        );
        walk(key, inner.map(parseTarget), [...path, `:include:${t.path}`], depth + 1);
        continue;
      }
      const local = opts.isLocal(t.address);
      const lname = local?.local.toLowerCase();
      if (lname === key) {
        // "bob: bob, ..." keeps a copy in bob's own mailbox.
        add({ kind: "address", address: t.address, mailbox: true });
        continue;
      }
      if (lname !== undefined && table.has(lname)) {
        if (path.includes(lname)) throw loop(`Alias loop: ${[...path, lname].join(" -> ")}`);
        walk(lname, table.get(lname)!, [...path, lname], depth + 1);
        continue;
      }
      add({ kind: "address", address: t.address, mailbox: lname !== undefined });
    }
  };
  const add = (e: Expanded & { kind: "address" }) => {
    const k = e.address.toLowerCase();
    if (seen.has(k)) return;
    seen.add(k);
    out.push(e);
  };
  walk(start, table.get(start)!, [start], 0);
  return out;
}

function loop(text: string): DeliveryError {
  return new DeliveryError(text, { permanent: true, dsn: "5.4.6" });
}

/** The compiled form's path. */
export function compiledPath(source: string): string {
  return `${source}.json`;
}

/** Serialises a table for `newaliases`. */
export function serializeAliases(table: AliasTable): string {
  return JSON.stringify({ v: 1, aliases: Object.fromEntries(table) }) + "\n";
}

/**
 * Loads the aliases: the compiled FILE.json when it is at least as new as
 * FILE, else FILE itself (a warning says to run newaliases). No file → empty.
 */
export async function loadAliases(source: string): Promise<{ table: AliasTable; stale: boolean }> {
  if (source === "") return { table: new Map(), stale: false };
  const src = await Deno.stat(source).catch(() => null);
  const bin = await Deno.stat(compiledPath(source)).catch(() => null);
  if (bin && (!src || (bin.mtime?.getTime() ?? 0) >= (src.mtime?.getTime() ?? 0))) {
    const data = JSON.parse(await Deno.readTextFile(compiledPath(source)));
    return {
      table: new Map(Object.entries(data.aliases as Record<string, AliasTarget[]>)),
      stale: false,
    };
  }
  if (!src) return { table: new Map(), stale: false };
  return { table: parseAliases(await Deno.readTextFile(source), source), stale: true };
}

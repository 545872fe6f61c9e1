/**
 * Milter addresses as the config names them, in Postfix's and sendmail's
 * forms: "inet:host:port" (or "host:port", "[v6]:port") and "unix:/path".
 * Parsed here, at config load, so a typo fails at start with its key named.
 */

/** Where a milter listens. */
export type MilterAddress = { host: string; port: number } | { path: string };

/** Parses a milter address from the config. */
export function parseMilterAddress(text: string): MilterAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (!path.startsWith("/")) throw new Error(`Milter socket ${text} must be an absolute path`);
    return { path };
  }
  const rest = text.startsWith("inet:") ? text.slice(5) : text;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(rest);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) {
    throw new Error(`Milter address ${JSON.stringify(text)} is not unix:/path or inet:host:port`);
  }
  return { host: m[1] ?? m[2], port };
}

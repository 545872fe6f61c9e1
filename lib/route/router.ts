/**
 * The router: where one recipient's mail goes, and why. Local domains
 * (local.domains) go to aliases first, then ~/.forward when enabled, then a
 * [[route]] for the domain or the local mailbox; other domains go to the
 * first matching [[route]] (exact domain, then "*.parent" from the nearest
 * parent up, then "*"), else the relayhost, else MX delivery. `skiff route`
 * prints the same answer an operator would get from the queue manager.
 */
import type { Config } from "../config/types.ts";
import { domainOf, localPart, mailboxName } from "../mail/address.ts";
import { type AliasTable, expandAlias, type Expanded } from "./aliases.ts";
import { findLocalUser, lookupUser, type PasswdEntry } from "../sys/passwd.ts";
import type { Destination, RunAs } from "../config/route_types.ts";
import type { ForwardTarget } from "./aliases.ts";

/** envelope.protocol of a message made by alias or .forward expansion. */
export const PROTOCOL_ALIAS = "ALIAS";

/** The routing decision for one recipient. */
export type Routed =
  | {
    type: "deliver";
    destination: Destination;
    /** The recipient's domain ("" for a bare local name). */
    domain: string;
    /** Local mailbox name (lower case) for local destinations. */
    user: string;
    /** Run local delivery as this user (local_users, or a route's user). */
    runAs: RunAs | null;
    /** Per-destination limits. */
    concurrency: number;
    rate: number;
    why: string;
    /** The recipient address a command or file target was expanded from (its RECIPIENT). */
    original?: string;
    /**
     * Check the user's ~/.forward first, in a worker running as `runAs`
     * (never read by the manager); `deliver` says whether that worker may
     * also deliver to `destination` when there is none (same uid, local kind).
     */
    forward?: { path: string; owner: number; deliver: boolean };
  }
  | { type: "expand"; targets: Expanded[]; why: string; runAs: RunAs | null }
  | { type: "fail"; dsn: string; text: string; why: string };

/** What the router needs besides the config. */
export interface RouterContext {
  aliases: AliasTable;
  /** Reads :include: files of the aliases file (an administrator's files). */
  readFile: (path: string) => string | null;
  /** Whether skiff runs as root (uid/gid switching possible). */
  root: boolean;
  /** Route past ~/.forward (a worker found none, or refused it). */
  skipForward?: boolean;
}

/**
 * Who runs a command or file destination that names no user: when skiff is
 * root, delivery.default_privs (Postfix's default_privs, "nobody"), never
 * root; otherwise skiff's own user (null). Undefined: that user is unknown.
 */
export function defaultPrivs(cfg: Config, ctx: RouterContext): RunAs | null | undefined {
  if (!ctx.root) return null;
  const name = cfg.delivery.defaultPrivs;
  const ids = lookupUser(name);
  if (!ids || ids.uid === 0) return undefined;
  return { name, uid: ids.uid, gid: ids.gid };
}

function unknownPrivs(cfg: Config): Extract<Routed, { type: "fail" }> {
  return {
    type: "fail",
    dsn: "4.3.5",
    text: `delivery.default_privs user ${cfg.delivery.defaultPrivs} is not in /etc/passwd`,
    why: "a command or file target with no user while skiff is root",
  };
}

/** True for a domain delivered here; "" (a bare name like "postmaster") counts. */
export function isLocalDomain(cfg: Config, domain: string): boolean {
  return domain === "" || cfg.local.domains.includes(domain);
}

/** The [[route]] for a domain: exact, then "*.parent" nearest first, then "*". */
export function findRoute(cfg: Config, domain: string) {
  const exact = cfg.routes.find((r) => r.domain === domain);
  if (exact) return exact;
  const labels = domain.split(".");
  for (let i = 1; i < labels.length; i++) {
    const wild = `*.${labels.slice(i).join(".")}`;
    const r = cfg.routes.find((x) => x.domain === wild);
    if (r) return r;
  }
  return domain === "" ? undefined : cfg.routes.find((r) => r.domain === "*");
}

/**
 * Special recipients of an ALIAS message: `|` + JSON {command, user} for a
 * command, `|` + JSON {file, user} for a file (a bare `/path`, as older
 * queue files have, is a file written as skiff's own user). Commands and
 * files run as the user the expansion names (`nobody` for the aliases file
 * when root, the forwarding user for a .forward): never as root, so a
 * .forward cannot make skiff write /etc/... Only envelopes with
 * PROTOCOL_ALIAS (made by the manager) may carry them: an SMTP client can
 * never ask for a command or a file.
 */
export function encodeSpecial(e: Expanded, runAs: RunAs | null, rcpt = ""): string {
  if (e.kind === "pipe") return `|${JSON.stringify({ command: e.command, user: runAs, rcpt })}`;
  if (e.kind === "file") return `|${JSON.stringify({ file: e.path, user: runAs, rcpt })}`;
  return e.address;
}

/** One recipient being routed: what every step of the chain looks at. */
interface Query {
  cfg: Config;
  ctx: RouterContext;
  address: string;
  protocol: string;
  /** domainOf(address): lower case, "" for a bare name. */
  domain: string;
  /** The local part, lower case: the mailbox, alias or user name it would be. */
  user: string;
}

type Delivered = Extract<Routed, { type: "deliver" }>;

/**
 * Routes one recipient of a message with the given envelope protocol: a
 * short chain, each step answering or passing (null) to the next. Special
 * targets of an alias message first; then, for other domains, a [[route]],
 * the relayhost, MX; for local ones, aliases, then the mailbox (a local
 * domain's [[route]] or the local mailbox), behind ~/.forward when enabled.
 */
export function route(
  cfg: Config,
  ctx: RouterContext,
  address: string,
  protocol = "ESMTP",
): Routed {
  const domain = domainOf(address);
  const q: Query = { cfg, ctx, address, protocol, domain, user: localPart(address).toLowerCase() };
  if (protocol === PROTOCOL_ALIAS && (address.startsWith("|") || address.startsWith("/"))) {
    return specialTarget(q);
  }
  if (!isLocalDomain(cfg, domain)) return domainRoute(q) ?? relayhostRoute(q) ?? mxRoute(q);
  return aliasRoute(q) ?? localRoute(q);
}

/** A "deliver" decision; `limits` (a [[route]]) overrides delivery.concurrency/rate when set. */
function delivered(
  cfg: Config,
  r: Omit<Delivered, "type" | "concurrency" | "rate"> & {
    limits?: { concurrency: number; rate: number };
  },
): Delivered {
  const { limits, ...rest } = r;
  return {
    type: "deliver",
    ...rest,
    concurrency: limits?.concurrency || cfg.delivery.concurrency,
    rate: limits?.rate || cfg.delivery.rate,
  };
}

const FILE_WHY = "file target of an alias or .forward";

/** A command or file target written by alias or .forward expansion (see encodeSpecial). */
function specialTarget(q: Query): Routed {
  const { cfg, ctx, address } = q;
  if (address.startsWith("/")) {
    const privs = defaultPrivs(cfg, ctx);
    if (privs === undefined) return unknownPrivs(cfg);
    const destination: Destination = { kind: "mbox", path: address, user: privs, file: true };
    return delivered(cfg, { destination, domain: "", user: "", runAs: privs, why: FILE_WHY });
  }
  const spec = JSON.parse(address.slice(1)) as
    | { command: string[]; user: RunAs | null; rcpt?: string }
    | { file: string; user: RunAs | null; rcpt?: string };
  // Expanded while skiff was not root, delivered now that it is: never as root.
  const privs = spec.user ?? defaultPrivs(cfg, ctx);
  if (privs === undefined) return unknownPrivs(cfg);
  const original = typeof spec.rcpt === "string" && spec.rcpt !== "" ? spec.rcpt : undefined;
  const destination: Destination = "file" in spec
    ? { kind: "mbox", path: spec.file, user: privs, file: true }
    : { kind: "pipe", command: spec.command, user: privs };
  return delivered(cfg, {
    destination,
    domain: "",
    user: original ? localPart(original).toLowerCase() : "",
    runAs: privs,
    why: "file" in spec ? FILE_WHY : "command target of an alias or .forward",
    ...(original ? { original } : {}),
  });
}

/** A non-local domain with a [[route]]. */
function domainRoute(q: Query): Routed | null {
  const { cfg, ctx, domain, user } = q;
  const r = findRoute(cfg, domain);
  if (!r) return null;
  const bad = badMailbox(r.destination, user);
  if (bad) return bad;
  const runAs = routeRunAs(cfg, ctx, r.destination, null);
  if (runAs === undefined) return unknownPrivs(cfg);
  const destination = mailboxIn(r.destination, user);
  const why = `[[route]] domain = "${r.domain}"`;
  return delivered(cfg, { destination, domain, user, runAs, limits: r, why });
}

/** A non-local domain without a [[route]], when relay.relayhost is set. */
function relayhostRoute(q: Query): Routed | null {
  const { cfg, domain } = q;
  if (!cfg.relay.relayhost) return null;
  const { host, port } = cfg.relay.relayhost;
  const d = cfg.delivery;
  const destination: Destination = {
    kind: "smtp",
    host,
    port,
    tls: d.tls,
    authUser: d.authUser,
    authPassword: d.authPassword,
  };
  const why = "relay.relayhost (no [[route]] for the domain)";
  return delivered(cfg, { destination, domain, user: "", runAs: null, why });
}

/** Everything else non-local: the domain's MX hosts. */
function mxRoute(q: Query): Routed {
  const destination: Destination = { kind: "mx", tls: q.cfg.delivery.tls };
  const why = "MX delivery (no [[route]], no relayhost)";
  return delivered(q.cfg, { destination, domain: q.domain, user: "", runAs: null, why });
}

/** "Is this address local, and as what name?" for alias and .forward expansion. */
function localTest(cfg: Config) {
  return (a: string) => (isLocalDomain(cfg, domainOf(a)) ? { local: localPart(a) } : null);
}

/** A local name in the aliases file (not for targets of an expansion: no re-aliasing). */
function aliasRoute(q: Query): Routed | null {
  const { cfg, ctx, user } = q;
  if (q.protocol === PROTOCOL_ALIAS) return null;
  const runAs = defaultPrivs(cfg, ctx);
  if (runAs === undefined && ctx.aliases.has(user)) return unknownPrivs(cfg);
  try {
    const targets = expandAlias(ctx.aliases, user, {
      isLocal: localTest(cfg),
      readInclude: (p) => ctx.readFile(p) ?? "",
    });
    return targets
      ? { type: "expand", targets, why: `alias "${user}"`, runAs: runAs ?? null }
      : null;
  } catch (err) {
    return { type: "fail", dsn: "5.4.6", text: (err as Error).message, why: `alias "${user}"` };
  }
}

/** A local recipient's mailbox, behind ~/.forward when delivery.forward is on. */
function localRoute(q: Query): Routed {
  const { cfg, ctx, domain, user } = q;
  const d = cfg.delivery;
  const pw: PasswdEntry | null = d.localUsers || d.forward ? findLocalUser(user) : null;
  const routed = mailboxRoute(cfg, ctx, { domain, user, pw });
  if (
    !d.forward || !pw || q.protocol === PROTOCOL_ALIAS || ctx.skipForward ||
    routed.type === "fail"
  ) return routed;
  // ~/.forward is opened and parsed by a worker running as the user
  // (lib/worker/forward.ts), never read here: the manager runs as root.
  const runAs = { name: pw.name, uid: pw.uid, gid: pw.gid };
  const local = ["mbox", "maildir", "pipe"].includes(routed.destination.kind);
  const same = !ctx.root || JSON.stringify(routed.runAs) === JSON.stringify(runAs);
  return {
    ...routed,
    runAs,
    forward: { path: `${pw.home}/.forward`, owner: pw.uid, deliver: local && same },
    why: `${pw.home}/.forward if safe and present, else ${routed.why}`,
  };
}

/** The local mailbox (or a local domain's [[route]]) of a local recipient. */
function mailboxRoute(
  cfg: Config,
  ctx: RouterContext,
  r: { domain: string; user: string; pw: PasswdEntry | null },
): Extract<Routed, { type: "deliver" | "fail" }> {
  const d = cfg.delivery;
  const { domain, user, pw } = r;
  if (d.localUsers && !pw) {
    return {
      type: "fail",
      dsn: "5.1.1",
      text: `No such user here: ${user}`,
      why: "delivery.local_users and no /etc/passwd entry",
    };
  }
  const runAs: RunAs | null = d.localUsers && pw
    ? { name: pw.name, uid: pw.uid, gid: pw.gid }
    : null;
  const rt = findRoute(cfg, domain);
  if (rt) {
    const bad = badMailbox(rt.destination, user);
    if (bad) return bad;
    const who = routeRunAs(cfg, ctx, rt.destination, runAs);
    if (who === undefined) return unknownPrivs(cfg);
    const destination = mailboxIn(rt.destination, user);
    const why = `local domain, [[route]] domain = "${rt.domain}"`;
    return delivered(cfg, { destination, domain, user, runAs: who, limits: rt, why });
  }
  const root = cfg.local.maildirRoot;
  const destination: Destination = d.localMailbox === "mbox"
    ? { kind: "mbox", path: d.mboxDir, user: runAs }
    : root.startsWith("~/") && pw
    ? { kind: "maildir", path: `${pw.home}/${root.slice(2)}`, user: runAs, exact: true }
    : { kind: "maildir", path: root, user: runAs };
  const bad = badMailbox(destination, user);
  if (bad) return bad;
  const why = `local domain "${domain || "(none)"}", ${d.localMailbox} mailbox`;
  return delivered(cfg, { destination: mailboxIn(destination, user), domain, user, runAs, why });
}

/**
 * The expansion of a .forward whose targets a worker read (untrusted, already
 * shape-checked by protocol.ts): the same loop and size rules as aliases,
 * and commands and files run as the forwarding user (`runAs`).
 */
export function forwardExpansion(
  cfg: Config,
  f: { address: string; targets: ForwardTarget[]; runAs: RunAs | null; why: string },
): Routed {
  const user = localPart(f.address).toLowerCase();
  try {
    const table: AliasTable = new Map([[user, f.targets]]);
    const targets = expandAlias(table, user, { isLocal: localTest(cfg), readInclude: () => "" }) ??
      [];
    return { type: "expand", targets, why: f.why, runAs: f.runAs };
  } catch (err) {
    return { type: "fail", dsn: "5.4.6", text: (err as Error).message, why: f.why };
  }
}

/**
 * Who a [[route]] destination runs as: its own `user =`, else the local
 * user (local_users), else for a pipe delivery.default_privs when root.
 */
function routeRunAs(
  cfg: Config,
  ctx: RouterContext,
  dest: Destination,
  local: RunAs | null,
): RunAs | null | undefined {
  const own = "user" in dest ? dest.user : null;
  if (own) return own;
  if (local) return local;
  return dest.kind === "pipe" ? defaultPrivs(cfg, ctx) : null;
}

/**
 * An mbox destination's path is a directory (a route's `path`, or
 * delivery.mbox_dir): the recipient's mailbox is the file named after them.
 */
function mailboxIn(dest: Destination, user: string): Destination {
  return dest.kind === "mbox" ? { ...dest, path: `${dest.path}/${user}` } : dest;
}

/**
 * A mailbox name that cannot be a file or directory name under the root
 * ("", ".", "..", a "/", control characters: `"../x"@domain` must never
 * reach a path) fails at once with 5.1.1, for mbox and Maildir alike.
 */
function badMailbox(dest: Destination, user: string): Extract<Routed, { type: "fail" }> | null {
  if (dest.kind !== "mbox" && dest.kind !== "maildir") return null;
  try {
    mailboxName(user);
    return null;
  } catch (err) {
    return {
      type: "fail",
      dsn: "5.1.1",
      text: (err as Error).message,
      why: `${dest.kind} under ${dest.path}`,
    };
  }
}

/** One line describing a destination, for logs and `skiff route`. */
export function describeDestination(dest: Destination, domain: string): string {
  switch (dest.kind) {
    case "mx":
      return `smtp via MX of ${domain} (tls ${dest.tls})`;
    case "smtp":
      return `smtp to ${dest.host}:${dest.port} (tls ${dest.tls}${
        dest.authUser ? `, auth ${dest.authUser}` : ""
      })`;
    case "lmtp":
      return `lmtp to ${dest.socket || `${dest.host}:${dest.port}`}`;
    case "program":
      return `lmtp to program ${JSON.stringify(dest.command)}`;
    case "pipe":
      return `pipe to ${JSON.stringify(dest.command)}${dest.user ? ` as ${dest.user.name}` : ""}`;
    case "mbox":
      return `mbox ${dest.path}${dest.user ? ` as ${dest.user.name}` : ""}`;
    case "maildir":
      return `maildir ${dest.exact ? "" : "under "}${dest.path}${
        dest.user ? ` as ${dest.user.name}` : ""
      }`;
    case "discard":
      return "discard";
    case "error":
      return `error ${dest.dsn} ${dest.text}`;
  }
}

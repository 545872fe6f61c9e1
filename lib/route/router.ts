/**
 * The router: where one recipient's mail goes, and why. Local domains
 * (local.domains) go to aliases first, then ~/.forward when enabled, then a
 * [[route]] for the domain or the local mailbox; other domains go to the
 * first matching [[route]] (exact domain, then "*.parent" from the nearest
 * parent up, then "*"), else the relayhost, else MX delivery. `skiff route`
 * prints the same answer an operator would get from the queue manager.
 */
import type { Config } from "../config/types.ts";
import { domainOf } from "../smtp/policy.ts";
import { type AliasTable, expandAlias, type Expanded } from "./aliases.ts";
import { findLocalUser, lookupUser, type PasswdEntry } from "../sys/passwd.ts";
import type { Destination, RunAs } from "./types.ts";
import type { ForwardTarget } from "../worker/protocol.ts";
import { maildirUser } from "../deliver/maildir.ts";

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

function localPart(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? address : address.slice(0, at);
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

/** Routes one recipient of a message with the given envelope protocol. */
export function route(
  cfg: Config,
  ctx: RouterContext,
  address: string,
  protocol = "ESMTP",
): Routed {
  const domain = domainOf(address);
  const d = cfg.delivery;
  const limits = (r?: { concurrency: number; rate: number }) => ({
    concurrency: r?.concurrency || d.concurrency,
    rate: r?.rate || d.rate,
  });
  if (protocol === PROTOCOL_ALIAS && (address.startsWith("|") || address.startsWith("/"))) {
    if (address.startsWith("/")) {
      const privs = defaultPrivs(cfg, ctx);
      if (privs === undefined) return unknownPrivs(cfg);
      return {
        type: "deliver",
        destination: { kind: "mbox", path: address, user: privs, file: true },
        domain: "",
        user: "",
        runAs: privs,
        ...limits(),
        why: "file target of an alias or .forward",
      };
    }
    const spec = JSON.parse(address.slice(1)) as
      | { command: string[]; user: RunAs | null; rcpt?: string }
      | { file: string; user: RunAs | null; rcpt?: string };
    // Expanded while skiff was not root, delivered now that it is: never as root.
    const privs = spec.user ?? defaultPrivs(cfg, ctx);
    if (privs === undefined) return unknownPrivs(cfg);
    const original = typeof spec.rcpt === "string" && spec.rcpt !== "" ? spec.rcpt : undefined;
    const who = original ? localPart(original).toLowerCase() : "";
    if ("file" in spec) {
      return {
        type: "deliver",
        destination: { kind: "mbox", path: spec.file, user: privs, file: true },
        domain: "",
        user: who,
        runAs: privs,
        ...limits(),
        why: "file target of an alias or .forward",
        ...(original ? { original } : {}),
      };
    }
    return {
      type: "deliver",
      destination: { kind: "pipe", command: spec.command, user: privs },
      domain: "",
      user: who,
      runAs: privs,
      ...limits(),
      why: "command target of an alias or .forward",
      ...(original ? { original } : {}),
    };
  }
  if (!isLocalDomain(cfg, domain)) {
    const r = findRoute(cfg, domain);
    if (r) {
      const user = localPart(address).toLowerCase();
      const bad = badMailbox(r.destination, user);
      if (bad) return bad;
      const runAs = routeRunAs(cfg, ctx, r.destination, null);
      if (runAs === undefined) return unknownPrivs(cfg);
      return {
        type: "deliver",
        destination: mailboxIn(r.destination, user),
        domain,
        user,
        runAs,
        ...limits(r),
        why: `[[route]] domain = "${r.domain}"`,
      };
    }
    if (cfg.relay.relayhost) {
      const { host, port } = cfg.relay.relayhost;
      return {
        type: "deliver",
        destination: {
          kind: "smtp",
          host,
          port,
          tls: d.tls,
          authUser: d.authUser,
          authPassword: d.authPassword,
        },
        domain,
        user: "",
        runAs: null,
        ...limits(),
        why: "relay.relayhost (no [[route]] for the domain)",
      };
    }
    return {
      type: "deliver",
      destination: { kind: "mx", tls: d.tls },
      domain,
      user: "",
      runAs: null,
      ...limits(),
      why: "MX delivery (no [[route]], no relayhost)",
    };
  }
  const user = localPart(address).toLowerCase();
  const isLocal = (a: string) => (isLocalDomain(cfg, domainOf(a)) ? { local: localPart(a) } : null);
  if (protocol !== PROTOCOL_ALIAS) {
    const runAs = defaultPrivs(cfg, ctx);
    if (runAs === undefined && ctx.aliases.has(user)) return unknownPrivs(cfg);
    try {
      const targets = expandAlias(ctx.aliases, user, {
        isLocal,
        readInclude: (p) => ctx.readFile(p) ?? "",
      });
      if (targets) return { type: "expand", targets, why: `alias "${user}"`, runAs: runAs ?? null };
    } catch (err) {
      return { type: "fail", dsn: "5.4.6", text: (err as Error).message, why: `alias "${user}"` };
    }
  }
  const pw: PasswdEntry | null = d.localUsers || d.forward ? findLocalUser(user) : null;
  const routed = mailboxRoute(cfg, ctx, { domain, user, pw });
  if (
    d.forward && pw && protocol !== PROTOCOL_ALIAS && !ctx.skipForward && routed.type !== "fail"
  ) {
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
  return routed;
}

/** The local mailbox (or a local domain's [[route]]) of a local recipient. */
function mailboxRoute(
  cfg: Config,
  ctx: RouterContext,
  r: { domain: string; user: string; pw: PasswdEntry | null },
): Extract<Routed, { type: "deliver" | "fail" }> {
  const d = cfg.delivery;
  const { domain, user, pw } = r;
  const limits = (x?: { concurrency: number; rate: number }) => ({
    concurrency: x?.concurrency || d.concurrency,
    rate: x?.rate || d.rate,
  });
  let runAs: RunAs | null = null;
  if (d.localUsers) {
    if (!pw) {
      return {
        type: "fail",
        dsn: "5.1.1",
        text: `No such user here: ${user}`,
        why: "delivery.local_users and no /etc/passwd entry",
      };
    }
    runAs = { name: pw.name, uid: pw.uid, gid: pw.gid };
  }
  const rt = findRoute(cfg, domain);
  if (rt) {
    const bad = badMailbox(rt.destination, user);
    if (bad) return bad;
    const who = routeRunAs(cfg, ctx, rt.destination, runAs);
    if (who === undefined) return unknownPrivs(cfg);
    return {
      type: "deliver",
      destination: mailboxIn(rt.destination, user),
      domain,
      user,
      runAs: who,
      ...limits(rt),
      why: `local domain, [[route]] domain = "${rt.domain}"`,
    };
  }
  const root = cfg.local.maildirRoot;
  const destination: Destination = d.localMailbox === "mbox"
    ? { kind: "mbox", path: d.mboxDir, user: runAs }
    : root.startsWith("~/") && pw
    ? { kind: "maildir", path: `${pw.home}/${root.slice(2)}`, user: runAs, exact: true }
    : { kind: "maildir", path: root, user: runAs };
  const bad = badMailbox(destination, user);
  if (bad) return bad;
  return {
    type: "deliver",
    destination: mailboxIn(destination, user),
    domain,
    user,
    runAs,
    ...limits(),
    why: `local domain "${domain || "(none)"}", ${d.localMailbox} mailbox`,
  };
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
  const isLocal = (a: string) => (isLocalDomain(cfg, domainOf(a)) ? { local: localPart(a) } : null);
  try {
    const table: AliasTable = new Map([[user, f.targets]]);
    const targets = expandAlias(table, user, { isLocal, readInclude: () => "" }) ?? [];
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
    maildirUser(user);
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

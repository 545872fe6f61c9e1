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
import { type AliasTable, expandAlias, type Expanded, parseTarget } from "./aliases.ts";
import { findLocalUser, lookupUser, type PasswdEntry } from "../sys/passwd.ts";
import type { Destination, RunAs } from "./types.ts";
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
  }
  | { type: "expand"; targets: Expanded[]; why: string; runAs: RunAs | null }
  | { type: "fail"; dsn: string; text: string; why: string };

/** What the router needs besides the config. */
export interface RouterContext {
  aliases: AliasTable;
  /** Reads :include: and .forward files. */
  readFile: (path: string) => string | null;
  /** Whether skiff runs as root (uid/gid switching possible). */
  root: boolean;
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
export function encodeSpecial(e: Expanded, runAs: RunAs | null): string {
  if (e.kind === "pipe") return `|${JSON.stringify({ command: e.command, user: runAs })}`;
  if (e.kind === "file") return `|${JSON.stringify({ file: e.path, user: runAs })}`;
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
      return {
        type: "deliver",
        destination: { kind: "mbox", path: address, user: null },
        domain: "",
        user: "",
        runAs: null,
        ...limits(),
        why: "file target of an alias or .forward",
      };
    }
    const spec = JSON.parse(address.slice(1)) as
      | { command: string[]; user: RunAs | null }
      | { file: string; user: RunAs | null };
    if ("file" in spec) {
      return {
        type: "deliver",
        destination: { kind: "mbox", path: spec.file, user: spec.user },
        domain: "",
        user: "",
        runAs: spec.user,
        ...limits(),
        why: "file target of an alias or .forward",
      };
    }
    return {
      type: "deliver",
      destination: { kind: "pipe", command: spec.command, user: spec.user },
      domain: "",
      user: "",
      runAs: spec.user,
      ...limits(),
      why: "command target of an alias or .forward",
    };
  }
  if (!isLocalDomain(cfg, domain)) {
    const r = findRoute(cfg, domain);
    if (r) {
      const user = localPart(address).toLowerCase();
      const bad = badMailbox(r.destination, user);
      if (bad) return bad;
      return {
        type: "deliver",
        destination: mailboxIn(r.destination, user),
        domain,
        user,
        runAs: "user" in r.destination ? r.destination.user : null,
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
    const owner = ctx.root ? lookupUser("nobody") : null;
    const runAs = owner ? { name: "nobody", ...owner } : null;
    try {
      const targets = expandAlias(ctx.aliases, user, {
        isLocal,
        readInclude: (p) => ctx.readFile(p) ?? "",
      });
      if (targets) return { type: "expand", targets, why: `alias "${user}"`, runAs };
    } catch (err) {
      return { type: "fail", dsn: "5.4.6", text: (err as Error).message, why: `alias "${user}"` };
    }
  }
  const pw: PasswdEntry | null = d.localUsers || d.forward ? findLocalUser(user) : null;
  if (d.forward && pw && protocol !== PROTOCOL_ALIAS) {
    const text = ctx.readFile(`${pw.home}/.forward`);
    if (text !== null && text.trim() !== "") {
      const runAs = { name: pw.name, uid: pw.uid, gid: pw.gid };
      try {
        const table = new Map([[
          user,
          text.split(/[,\n]/).filter((s) => s.trim()).map(parseTarget),
        ]]);
        const targets = expandAlias(table, user, { isLocal, readInclude: () => "" })!;
        return { type: "expand", targets, why: `${pw.home}/.forward`, runAs };
      } catch (err) {
        return { type: "fail", dsn: "5.4.6", text: (err as Error).message, why: ".forward" };
      }
    }
  }
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
  const r = findRoute(cfg, domain);
  if (r) {
    const bad = badMailbox(r.destination, user);
    if (bad) return bad;
    return {
      type: "deliver",
      destination: mailboxIn(r.destination, user),
      domain,
      user,
      runAs: ("user" in r.destination ? r.destination.user : null) ?? runAs,
      ...limits(r),
      why: `local domain, [[route]] domain = "${r.domain}"`,
    };
  }
  const destination: Destination = d.localMailbox === "mbox"
    ? { kind: "mbox", path: d.mboxDir, user: runAs }
    : { kind: "maildir", path: cfg.local.maildirRoot, user: runAs };
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
function badMailbox(dest: Destination, user: string): Routed | null {
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
      return `maildir under ${dest.path}${dest.user ? ` as ${dest.user.name}` : ""}`;
    case "discard":
      return "discard";
    case "error":
      return `error ${dest.dsn} ${dest.text}`;
  }
}

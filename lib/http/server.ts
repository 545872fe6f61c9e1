/**
 * The monitoring endpoint of `skiff serve` ([http]): /metrics for
 * Prometheus, / for people, /queue.json for scripts. Built on Deno.serve in
 * the manager process. Deno.serve has no knob for a connection cap or a
 * header timeout, so the bounds are the ones a handler can keep: only GET
 * and HEAD without a body, a short URL, at most MAX_IN_FLIGHT requests at
 * once (more get 503), HANDLER_TIMEOUT_MS per answer, and "Connection:
 * close" so no idle keep-alive connection lingers. It binds loopback
 * unless the operator allowed otherwise (lib/http/config.ts) and, with a
 * token configured, answers 401 to anything without it.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Config, HostPort } from "../config/types.ts";
import { formatListenAddress } from "../config/listeners.ts";
import { formatHostPort } from "../config/load.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { installMetrics } from "../metrics/metrics.ts";
import { VERSION } from "../version.ts";
import { Collector } from "./collector.ts";
import { loadToken } from "./config.ts";
import { oldestDeferred, QueueView, summarize } from "./snapshot.ts";
import { renderStatusPage } from "./status_page.ts";

/** Requests answered at once; more get 503 (a scrape storm must not starve the manager). */
const MAX_IN_FLIGHT = 8;
/** Longest request target accepted, in bytes. */
const MAX_URL = 2048;
/** Time to produce one answer. */
const HANDLER_TIMEOUT_MS = 10_000;
/** /queue.json page size: default and largest. */
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
/** How often the status page reloads itself. */
const REFRESH_SECONDS = 30;

/** What the endpoint needs from the manager. */
export interface HttpOptions {
  config: Config;
  /** Ids being delivered now (the "active" queue). */
  activeIds: () => Set<string>;
  /** Test seam for the clock. */
  now?: () => number;
}

/** The running endpoint. */
export interface HttpEndpoint {
  /** "127.0.0.1:8025" as bound. */
  address: string;
  collector: Collector;
  close(): Promise<void>;
}

const SECURITY_HEADERS: Record<string, string> = {
  // No script, no external anything: the page needs only its inline style and SVG.
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "connection": "close",
};

function respond(status: number, body: string, type: string, extra: HeadersInit = {}): Response {
  const headers = new Headers({ ...SECURITY_HEADERS, "content-type": type });
  for (const [k, v] of new Headers(extra)) headers.append(k, v);
  return new Response(body, { status, headers });
}

function text(status: number, body: string, extra: HeadersInit = {}): Response {
  return respond(status, body + "\n", "text/plain; charset=utf-8", extra);
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** True when the request carries the token, as a Bearer token or as Basic auth's password. */
export function authorized(header: string | null, token: string): boolean {
  if (token === "") return true;
  if (header === null) return false;
  let given: string | null = null;
  const m = /^(Bearer|Basic)\s+(\S+)$/i.exec(header.trim());
  if (m && m[1].toLowerCase() === "bearer") given = m[2];
  else if (m) {
    // Browsers cannot send a bearer token on a meta refresh; Basic (any user name) they can.
    try {
      const plain = atob(m[2]);
      given = plain.slice(plain.indexOf(":") + 1);
    } catch {
      return false;
    }
  }
  // Compared as digests: equal length, constant time, no early exit on the first wrong byte.
  return given !== null && timingSafeEqual(digest(given), digest(token));
}

/** Reads ?offset= and ?limit=; a message naming the bad one otherwise. */
export function pageOf(params: URLSearchParams): { offset: number; limit: number } | string {
  const read = (name: string, dflt: number, max: number): number | string => {
    const v = params.get(name);
    if (v === null || v === "") return dflt;
    if (!/^[0-9]{1,9}$/.test(v)) {
      return `Parameter ${name} must be a whole number, got ${JSON.stringify(v.slice(0, 40))}`;
    }
    return Math.min(Number(v), max);
  };
  const offset = read("offset", 0, Number.MAX_SAFE_INTEGER);
  if (typeof offset === "string") return offset;
  const limit = read("limit", DEFAULT_LIMIT, MAX_LIMIT);
  if (typeof limit === "string") return limit;
  if (limit === 0) return `Parameter limit must be 1-${MAX_LIMIT}`;
  return { offset, limit };
}

/** Answers requests: bounds and token first, then the three pages. */
class Pages {
  readonly collector: Collector;
  #cfg: Config;
  #token: string;
  #now: () => number;
  #startedAt: number;
  #view: QueueView;
  #facts: [string, string][];
  #inFlight = 0;

  constructor(o: HttpOptions, token: string) {
    this.#cfg = o.config;
    this.#token = token;
    this.#now = o.now ?? Date.now;
    this.#startedAt = this.#now();
    this.#view = new QueueView({
      spoolDir: o.config.spoolDir,
      activeIds: o.activeIds,
      now: this.#now,
    });
    this.collector = new Collector({ queue: () => this.#view.summary(), now: this.#now });
    this.#facts = summarizeConfig(o.config);
  }

  /** The Deno.serve handler: the in-flight bound and the answer deadline. */
  handle = async (req: Request): Promise<Response> => {
    if (this.#inFlight >= MAX_IN_FLIGHT) {
      return text(503, "Too many requests at once; try again", { "retry-after": "1" });
    }
    this.#inFlight++;
    // A request counts until its work ends, even when the client got its 503 earlier.
    const work = this.#route(req).finally(() => this.#inFlight--);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<Response>((resolve) => {
      timer = setTimeout(
        () => resolve(text(503, `No answer within ${HANDLER_TIMEOUT_MS} ms`)),
        HANDLER_TIMEOUT_MS,
      );
    });
    try {
      return await Promise.race([work, late]);
    } catch (err) {
      logWarn("http error", { path: new URL(req.url).pathname, error: String(err) });
      return text(500, "Internal error; see the log");
    } finally {
      clearTimeout(timer);
    }
  };

  async #route(req: Request): Promise<Response> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return text(405, `Method ${req.method} is not allowed; use GET`, { allow: "GET, HEAD" });
    }
    if (req.url.length > MAX_URL) return text(414, `Request target longer than ${MAX_URL} bytes`);
    if (req.body !== null || req.headers.has("transfer-encoding")) {
      return text(413, "Requests to this endpoint carry no body");
    }
    if (!authorized(req.headers.get("authorization"), this.#token)) {
      return text(401, "A valid token is required (Authorization: Bearer TOKEN)", [
        ["www-authenticate", 'Bearer realm="skiff"'],
        ["www-authenticate", 'Basic realm="skiff"'],
      ]);
    }
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/metrics":
        return respond(200, await this.collector.text(), this.collector.contentType);
      case "/":
        return await this.#page();
      case "/queue.json":
        return await this.#queueJson(url);
      default:
        return text(404, `No page ${url.pathname.slice(0, 100)}; try /, /metrics or /queue.json`);
    }
  }

  async #page(): Promise<Response> {
    const entries = await this.#view.entries();
    const now = this.#now();
    const c = this.collector;
    // Whole hours since start, 1 to 6: a fresh manager's chart is not five hours of nothing.
    const hours = Math.min(6, Math.max(1, Math.ceil((now - this.#startedAt) / 3_600_000)));
    const html = renderStatusPage({
      hostname: this.#cfg.hostname,
      version: VERSION,
      deno: Deno.version.deno,
      pid: Deno.pid,
      startedAt: this.#startedAt,
      now,
      refreshSeconds: REFRESH_SECONDS,
      queue: summarize(entries, now),
      connectionsIn: c.openInbound,
      cache: c.cacheStats,
      fsyncsPerMessage: c.fsyncsPerMessage,
      history: c.history(hours * 60),
      oldestDeferred: oldestDeferred(entries, 10),
      topDeferred: c.topDeferred(10),
      config: this.#facts,
    });
    return respond(200, html, "text/html; charset=utf-8");
  }

  async #queueJson(url: URL): Promise<Response> {
    const p = pageOf(url.searchParams);
    if (typeof p === "string") return text(400, p);
    const entries = await this.#view.entries();
    const body = {
      total: entries.length,
      offset: p.offset,
      limit: p.limit,
      messages: entries.slice(p.offset, p.offset + p.limit),
    };
    return respond(200, JSON.stringify(body) + "\n", "application/json");
  }
}

/** Binds Deno.serve; throws with the address named when it cannot. */
function listen(
  at: HostPort,
  handler: (req: Request) => Promise<Response>,
): Deno.HttpServer<Deno.NetAddr> {
  try {
    const server = Deno.serve({
      hostname: at.host,
      port: at.port,
      onListen: () => {}, // logged by startHttp, in skiff's own format
      onError: (err) => {
        logWarn("http error", { error: String(err) });
        return text(500, "Internal error; see the log");
      },
    }, handler);
    server.finished.catch(() => {});
    return server;
  } catch (err) {
    const why = (err as Error).message;
    throw new Error(`Cannot listen on http.address ${formatHostPort(at)}: ${why}`);
  }
}

/** Starts the endpoint and installs its collector as the metrics sink. */
export async function startHttp(o: HttpOptions): Promise<HttpEndpoint> {
  const token = await loadToken(o.config.http);
  const pages = new Pages(o, token);
  const server = listen(o.config.http.address!, pages.handle);
  const addr = server.addr;
  installMetrics(pages.collector);
  const address = formatHostPort({ host: addr.hostname, port: addr.port });
  logEvent("http listening", { address, token: token === "" ? "none" : "required" });
  return {
    address,
    collector: pages.collector,
    close: async () => {
      installMetrics(null);
      await server.shutdown().catch(() => {});
    },
  };
}

/** The build and config facts the status page lists. */
function summarizeConfig(cfg: Config): [string, string][] {
  const d = cfg.delivery;
  return [
    ["version", `skiff ${VERSION}, Deno ${Deno.version.deno}, ${Deno.build.target}`],
    ["binary", Deno.build.standalone ? "compiled" : "deno run"],
    ["pid", String(Deno.pid)],
    ["config", cfg.source],
    ["hostname", cfg.hostname],
    ["spool", cfg.spoolDir],
    [
      "listeners",
      cfg.listeners.map((l) =>
        `${formatListenAddress(l.address)} (${l.protocol}, tls ${l.tls}, auth ${l.auth})`
      ).join("; "),
    ],
    ["local domains", cfg.local.domains.join(", ") || "none"],
    ["relayhost", cfg.relay.relayhost ? formatHostPort(cfg.relay.relayhost) : "none (MX delivery)"],
    ["routes", String(cfg.routes.length)],
    [
      "workers / relay",
      `${cfg.queue.workers} workers, ${cfg.queue.relayConcurrency} relay deliveries at once`,
    ],
    [
      "retry",
      `${cfg.queue.retryMin} s to ${cfg.queue.retryMax} s, lifetime ${cfg.queue.lifetime} s`,
    ],
    ["outbound TLS", d.tls],
    ["connection cache", `${d.cacheSize} sessions, ${d.cacheIdle} s idle`],
  ];
}

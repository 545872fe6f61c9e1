/**
 * SMTP TLS Reporting (RFC 8460): counts of successful and failed TLS
 * sessions per policy domain and day (UTC), kept in a small JSON state file
 * in the spool directory (written durably, coalesced), and turned into one
 * aggregate report per domain and day (§4 format) once the day is over: on
 * the first session recorded on a later day, and when skiff starts. Reports
 * are written as files; with tls_rpt = "send" they are also handed to
 * `send` (which mails them to the rua of the domain's `_smtp._tls` record).
 */
import { writeFileDurably } from "../spool/durable.ts";
import { logEvent, logWarn } from "../log/log.ts";

/** One policy as reported (§4.3). */
export interface RptPolicy {
  type: "sts" | "tlsa" | "no-policy-found";
  /** The policy text lines (sts) or TLSA records in presentation form. */
  strings: string[];
  /** sts: the mx patterns. */
  mxHost: string[];
}

/** One session outcome. */
export interface RptSession {
  domain: string;
  policy: RptPolicy;
  /** "success" or an RFC 8460 §4.3 result type. */
  result: string;
  mx?: string;
  ip?: string;
  detail?: string;
}

interface PolicyCounts {
  policy: RptPolicy;
  success: number;
  /** key "result|mx|ip" → count. */
  failures: Record<string, number>;
}

/** day → domain → policy key → counts. */
type State = Record<string, Record<string, Record<string, PolicyCounts>>>;

/** Domains counted per day at most (memory and file bound). */
const MAX_DOMAINS = 10_000;
/** Distinct failure kinds kept per policy. */
const MAX_FAILURE_KINDS = 100;

/** Where reports go and who writes them. */
export interface TlsRptOptions {
  statePath: string;
  reportDir: string;
  /** Our organization-name and contact (the host name). */
  hostname: string;
  now?: () => number;
  /** "send": mail one report for domain (JSON text); errors are logged. */
  send?: (domain: string, report: string, name: string) => Promise<void>;
}

function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The counter and report writer; see the module comment. */
export class TlsRpt {
  #o: TlsRptOptions;
  #now: () => number;
  #state: State | null = null;
  #writing: Promise<void> = Promise.resolve();
  #dirty = false;

  constructor(o: TlsRptOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  async #load(): Promise<State> {
    if (this.#state) return this.#state;
    let state: State = {};
    try {
      const raw = JSON.parse(await Deno.readTextFile(this.#o.statePath));
      if (raw && typeof raw === "object" && !Array.isArray(raw)) state = raw;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        logWarn("tls-rpt state unreadable", { path: this.#o.statePath, reason: String(err) });
      }
    }
    return this.#state ??= state;
  }

  /** Writes the state file; concurrent calls coalesce into at most one more write. */
  #save(): Promise<void> {
    if (this.#dirty) return this.#writing;
    this.#dirty = true;
    this.#writing = this.#writing.then(async () => {
      this.#dirty = false;
      const text = JSON.stringify(this.#state ?? {});
      await writeFileDurably(this.#o.statePath, new TextEncoder().encode(text)).catch((err) =>
        logWarn("tls-rpt state not saved", { path: this.#o.statePath, reason: String(err) })
      );
    });
    return this.#writing;
  }

  /** Counts one session (and writes the reports of finished days first). */
  async record(s: RptSession): Promise<void> {
    const now = this.#now();
    await this.rollover(now);
    const state = await this.#load();
    const day = (state[dayOf(now)] ??= {});
    if (!day[s.domain] && Object.keys(day).length >= MAX_DOMAINS) return;
    const byPolicy = (day[s.domain] ??= {});
    const key = `${s.policy.type}|${s.policy.strings.join("\n")}`;
    const c = (byPolicy[key] ??= { policy: s.policy, success: 0, failures: {} });
    if (s.result === "success") c.success++;
    else {
      const f = `${s.result}|${s.mx ?? ""}|${s.ip ?? ""}`;
      if (f in c.failures || Object.keys(c.failures).length < MAX_FAILURE_KINDS) {
        c.failures[f] = (c.failures[f] ?? 0) + 1;
      }
    }
    await this.#save();
  }

  /** Writes (and with send, mails) the reports of every day before today's; returns their paths. */
  async rollover(now = this.#now()): Promise<string[]> {
    const state = await this.#load();
    const today = dayOf(now);
    const done = Object.keys(state).filter((d) => d < today).sort();
    if (done.length === 0) return [];
    const paths: string[] = [];
    await Deno.mkdir(this.#o.reportDir, { recursive: true, mode: 0o750 });
    for (const day of done) {
      for (const [domain, policies] of Object.entries(state[day])) {
        const name = `${day}_${domain}_${this.#o.hostname}.json`;
        const report = JSON.stringify(this.report(day, domain, policies), null, 2) + "\n";
        const path = `${this.#o.reportDir}/${name}`;
        await writeFileDurably(path, new TextEncoder().encode(report));
        paths.push(path);
        logEvent("tls-rpt report written", { domain, day, path });
        if (this.#o.send) {
          await this.#o.send(domain, report, name).catch((err) =>
            logWarn("tls-rpt report not sent", { domain, day, reason: String(err) })
          );
        }
      }
      delete state[day];
    }
    await this.#save();
    return paths;
  }

  /** The RFC 8460 §4.4 report of one domain and day. */
  report(day: string, domain: string, policies: Record<string, PolicyCounts>): unknown {
    return {
      "organization-name": this.#o.hostname,
      "date-range": {
        "start-datetime": `${day}T00:00:00Z`,
        "end-datetime": `${day}T23:59:59Z`,
      },
      "contact-info": `postmaster@${this.#o.hostname}`,
      "report-id": `${day}_${domain}@${this.#o.hostname}`,
      policies: Object.values(policies).map((c) => ({
        policy: {
          "policy-type": c.policy.type,
          "policy-string": c.policy.strings,
          "policy-domain": domain,
          ...(c.policy.mxHost.length ? { "mx-host": c.policy.mxHost } : {}),
        },
        summary: {
          "total-successful-session-count": c.success,
          "total-failure-session-count": Object.values(c.failures).reduce((a, b) => a + b, 0),
        },
        "failure-details": Object.entries(c.failures).map(([k, n]) => {
          const [result, mx, ip] = k.split("|");
          return {
            "result-type": result,
            ...(ip ? { "receiving-ip": ip } : {}),
            ...(mx ? { "receiving-mx-hostname": mx } : {}),
            "failed-session-count": n,
          };
        }),
      })),
    };
  }
}

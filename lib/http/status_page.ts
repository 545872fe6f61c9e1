/**
 * The operator's status page: one server-rendered HTML document with its
 * style and chart inline (no external assets, so it works offline and on an
 * air-gapped host), refreshing itself. Everything that comes from mail —
 * senders, recipients, error texts, domains — is hostile input and goes
 * through esc(); the server also sends a Content-Security-Policy that allows
 * no script at all, so a slip here could not run code either.
 */
import type { MinuteCounts } from "./collector.ts";
import type { DeferredMessage, QueueSummary } from "./snapshot.ts";

/** Everything the page shows. */
export interface PageData {
  hostname: string;
  version: string;
  deno: string;
  pid: number;
  startedAt: number;
  now: number;
  refreshSeconds: number;
  queue: QueueSummary;
  connectionsIn: number;
  cache: { hits: number; misses: number };
  fsyncsPerMessage: number | null;
  history: MinuteCounts[];
  oldestDeferred: DeferredMessage[];
  topDeferred: { domain: string; deferrals: number }[];
  /** Build and config facts, as label/value pairs. */
  config: [string, string][];
}

/**
 * HTML-escapes text for element content and quoted attributes. Five
 * replacements are the whole job (OWASP's rule #1 and #2 set); a dependency
 * for them would add more risk than it removes.
 */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** "3 h 12 min", "45 s": an age for people. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Cuts long hostile text so one message cannot blow up the page. */
function clip(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

const STYLE = `
:root{--fg:#1d2430;--muted:#5b6675;--line:#dde3ea;--bg:#f5f7fa;--card:#fff;
--ok:#1f8a4c;--warn:#c77700;--bad:#c0392b;--accent:#2a5db0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#1d2430;color:#fff;padding:14px max(24px,calc((100% - 1192px)/2));display:flex;align-items:baseline;gap:16px}
header h1{font-size:20px;margin:0;font-weight:600}
header .sub{color:#b8c2cf;font-size:13px}
main{padding:18px 24px;max-width:1240px;margin:0 auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .n{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums}
.card .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.deferred .n{color:var(--warn)} .card.hold .n{color:var(--muted)}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin-top:16px}
section h2{font-size:15px;margin:0 0 10px;font-weight:600}
.cols{display:grid;grid-template-columns:2fr 1fr;gap:16px}
.cols section{margin-top:16px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:12px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.err{color:var(--bad);font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;
word-break:break-word}
td.id,td.age{white-space:nowrap}
td.addr{max-width:240px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
td.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
.empty{color:var(--muted);font-style:italic}
.legend span{display:inline-block;margin-right:14px;color:var(--muted);font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0}
dt{color:var(--muted)} dd{margin:0;word-break:break-all}
footer{color:var(--muted);font-size:12px;padding:0 24px 18px;max-width:1240px;margin:0 auto}
`;

function card(id: string, label: string, value: string, cls = ""): string {
  return `<div class="card ${cls}"><div class="n" id="${id}">${esc(value)}</div>` +
    `<div class="l">${esc(label)}</div></div>`;
}

/** A round step for about four grid lines up to max ("nice numbers": 1, 2, 5 × 10^k). */
function gridStep(max: number): number {
  const raw = max / 4;
  const pow = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
}

/**
 * The per-minute chart as inline SVG: one bar per minute, delivered (green)
 * with deferred (amber) and bounced (red) stacked on it.
 */
export function chart(history: MinuteCounts[], width = 760, height = 170): string {
  const pad = { l: 36, r: 14, t: 8, b: 22 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const peak = Math.max(1, ...history.map((m) => m.delivered + m.deferred + m.bounced));
  const step = gridStep(peak);
  const max = Math.ceil(peak / step) * step;
  const bw = w / Math.max(1, history.length);
  const y = (v: number) => pad.t + h - (v * h) / max;
  const bars = history.map((m, i) => {
    let base = 0;
    return ([["delivered", "#1f8a4c"], ["deferred", "#c77700"], ["bounced", "#c0392b"]] as const)
      .map(([k, color]) => {
        const v = m[k];
        if (v === 0) return "";
        const top = y(base + v);
        const rect = `<rect x="${(pad.l + i * bw).toFixed(1)}" y="${top.toFixed(1)}" width="${
          Math.max(bw, 1.5).toFixed(2)
        }" height="${(y(base) - top).toFixed(1)}" fill="${color}"/>`;
        base += v;
        return rect;
      }).join("");
  }).join("");
  const grid = Array.from({ length: max / step + 1 }, (_, k) => {
    const v = k * step;
    return `<line x1="${pad.l}" x2="${width - pad.r}" y1="${y(v)}" y2="${
      y(v)
    }" stroke="#e6eaf0"/>` +
      `<text x="${pad.l - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`;
  }).join("");
  const hours = Math.round(history.length / 60);
  const ticks = Array.from({ length: hours + 1 }, (_, k) => {
    const x = pad.l + Math.min(history.length, k * 60) * bw;
    const label = k === hours ? "now" : `−${hours - k} h`;
    const anchor = k === hours ? "end" : k === 0 ? "start" : "middle";
    return `<text x="${x.toFixed(1)}" y="${height - 6}" text-anchor="${anchor}">${label}</text>`;
  }).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 ${width} ${height}" ` +
    `role="img" aria-label="Deliveries and deferrals per minute" ` +
    `style="font:11px system-ui,sans-serif;fill:#5b6675">${grid}${ticks}${bars}</svg>`;
}

function deferredTable(d: PageData): string {
  if (d.oldestDeferred.length === 0) return `<p class="empty">No deferred messages.</p>`;
  const rows = d.oldestDeferred.map((m) =>
    `<tr><td class="mono id">${esc(m.queue_id)}</td>` +
    `<td class="num age">${esc(formatAge(d.now / 1000 - m.arrival_time))}</td>` +
    `<td class="mono addr" title="${esc(clip(m.sender || "<>", 300))}">${
      esc(clip(m.sender || "<>", 80))
    }</td>` +
    `<td class="mono addr" title="${esc(clip(m.recipients.join(", "), 300))}">${
      esc(clip(m.recipients.join(", "), 120))
    }</td>` +
    `<td class="num">${m.attempts}</td>` +
    `<td class="err" title="${esc(clip(m.last_error, 1000))}">${
      esc(clip(m.last_error, 200))
    }</td></tr>`
  ).join("");
  return `<table id="oldest-deferred"><thead><tr><th>Queue id</th><th class="num">Age</th>` +
    `<th>Sender</th><th>Deferred recipients</th><th class="num">Tries</th><th>Last error</th>` +
    `</tr></thead><tbody>${rows}</tbody></table>`;
}

function topTable(d: PageData): string {
  if (d.topDeferred.length === 0) return `<p class="empty">No deferrals in the last hours.</p>`;
  const rows = d.topDeferred.map((t) =>
    `<tr><td class="mono">${esc(clip(t.domain, 80))}</td><td class="num">${t.deferrals}</td></tr>`
  ).join("");
  return `<table id="top-deferred"><thead><tr><th>Destination</th>` +
    `<th class="num">Deferrals</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function hoursText(minutes: number): string {
  const h = Math.round(minutes / 60);
  return h === 1 ? "hour" : `${h} hours`;
}

function totals(history: MinuteCounts[], minutes: number) {
  const recent = history.slice(-minutes);
  const sum = (k: "delivered" | "deferred" | "bounced" | "received") =>
    recent.reduce((n, m) => n + m[k], 0);
  return {
    received: sum("received"),
    delivered: sum("delivered"),
    deferred: sum("deferred"),
    bounced: sum("bounced"),
  };
}

/** The whole page. */
export function renderStatusPage(d: PageData): string {
  const q = d.queue;
  const lookups = d.cache.hits + d.cache.misses;
  const hitRate = lookups === 0 ? "–" : `${Math.round((100 * d.cache.hits) / lookups)} %`;
  const hour = totals(d.history, 60);
  const fsyncs = d.fsyncsPerMessage === null ? "–" : d.fsyncsPerMessage.toFixed(2);
  const config = d.config.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  const generated = new Date(d.now).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="${d.refreshSeconds}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>skiff · ${esc(d.hostname)} · ${q.total} queued</title>
<style>${STYLE}</style></head>
<body>
<header><h1>skiff on ${esc(d.hostname)}</h1>
<span class="sub">version ${esc(d.version)} · up ${
    esc(formatAge((d.now - d.startedAt) / 1000))
  } · ${esc(generated)}</span></header>
<main>
<div class="cards" id="queue">
${card("q-total", "queued", String(q.total))}
${card("q-incoming", "incoming", String(q.byState.incoming))}
${card("q-active", "active", String(q.byState.active))}
${card("q-deferred", "deferred", String(q.byState.deferred), "deferred")}
${card("q-hold", "on hold", String(q.byState.hold), "hold")}
${card("q-oldest", "oldest", q.total === 0 ? "–" : formatAge(q.oldestAgeSeconds))}
</div>
<div class="cards" style="margin-top:12px">
${card("h-delivered", "delivered, last hour", String(hour.delivered))}
${card("h-deferred", "deferred, last hour", String(hour.deferred), "deferred")}
${card("h-bounced", "bounced, last hour", String(hour.bounced))}
${card("h-received", "received, last hour", String(hour.received))}
${card("conn-in", "connections in", String(d.connectionsIn))}
${card("cache-hit-rate", "conn. cache hits", hitRate)}
${card("fsyncs", "fsyncs / message", fsyncs)}
</div>
<section><h2>Deliveries and deferrals per minute, last ${hoursText(d.history.length)}</h2>
<div class="legend"><span><i style="background:#1f8a4c"></i>delivered</span>` +
    `<span><i style="background:#c77700"></i>deferred</span>` +
    `<span><i style="background:#c0392b"></i>bounced</span></div>
${chart(d.history)}
</section>
<section><h2>Oldest deferred messages</h2>${deferredTable(d)}</section>
<div class="cols">
<section><h2>Build and configuration</h2><dl id="config">${config}</dl></section>
<section><h2>Top destinations by deferrals</h2>${topTable(d)}</section>
</div>
</main>
<footer>Refreshes every ${d.refreshSeconds} s · connection cache: ${d.cache.hits} hits, ${d.cache.misses} misses · ` +
    `<a href="metrics">/metrics</a> · <a href="queue.json">/queue.json</a></footer>
</body></html>
`;
}

/**
 * The monitoring endpoint ([http], lib/http/): config checks, /metrics
 * after real mail parsed by the real Prometheus text parser (Debian's
 * python3-prometheus-client), the token, /queue.json paging, and the status
 * page loaded in headless Chromium (a screenshot; the numbers it shows match
 * `skiff queue list`; hostile senders and error texts escaped).
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/load.ts";
import { ConfigError } from "../lib/config/load.ts";
import { authorized, pageOf } from "../lib/http/server.ts";
import { esc, renderStatusPage } from "../lib/http/status_page.ts";
import { Collector } from "../lib/http/collector.ts";
import { QueueView, summarize } from "../lib/http/snapshot.ts";
import { Spool } from "../lib/spool/spool.ts";
import {
  freePort,
  maildirFiles,
  RawClient,
  runSkiff,
  SkiffServer,
  submitMessage,
  waitFor,
} from "./harness.ts";
import { type Peer, PEERS, peerTest } from "./peers.ts";
import { runCommand } from "./run_cmd.ts";

const CHROMIUM: Peer = { bin: "/usr/bin/chromium", pkg: "chromium" };
const PROM_PARSER: Peer = {
  bin: "/usr/lib/python3/dist-packages/prometheus_client/parser.py",
  pkg: "python3-prometheus-client",
  data: true,
};
const HOSTILE_SENDER = `"<script>alert(1)</script>"@localhost`;
const HOSTILE_ERROR = `<img src=x onerror=alert(2)><script>alert(3)</script>`;

Deno.test("[http] is off by default; a non-loopback address needs allow_remote", () => {
  const base = parseConfig("", "t.toml", { cwd: "/" });
  assert.equal(base.http.address, null);
  const ok = (toml: string) => parseConfig(toml, "t.toml", { cwd: "/srv" }).http;
  assert.deepEqual(ok('[http]\naddress = "127.0.0.1:8025"').address, {
    host: "127.0.0.1",
    port: 8025,
  });
  assert.deepEqual(ok('[http]\naddress = "[::1]:8025"').address, { host: "::1", port: 8025 });
  assert.deepEqual(ok('[http]\naddress = "0.0.0.0:8025"\nallow_remote = true').address, {
    host: "0.0.0.0",
    port: 8025,
  });
  assert.equal(ok('[http]\ntoken_file = "tok"').tokenFile, "/srv/tok");
  const refused = (toml: string, key: string, what: RegExp) => {
    assert.throws(() => parseConfig(toml, "t.toml"), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.key, key);
      assert.match(e.message, what);
      return true;
    });
  };
  refused('[http]\naddress = "0.0.0.0:8025"', "http.address", /loopback.*allow_remote = true/);
  refused('[http]\naddress = "192.0.2.1:8025"', "http.address", /loopback/);
  refused('[http]\naddress = "[::]:8025"', "http.address", /loopback/);
  refused('[http]\naddress = "mail.example.org:8025"', "http.address", /loopback/);
  refused('[http]\naddress = "127.0.0.1"', "http.address", /host:port/);
  refused(
    '[http]\naddress = "127.0.0.1:8025"\nallow_remote = "yes"',
    "http.allow_remote",
    /true or false/,
  );
  refused('[http]\ntoken = "a b"', "http.token", /printable/);
  refused('[http]\ntoken = "x"\ntoken_file = "f"', "http.token_file", /one of them/);
  refused('[http]\nadress = "127.0.0.1:8025"', "http.adress", /unknown key/);
});

Deno.test("the token is checked as Bearer or as Basic's password; paging is bounded", () => {
  assert.equal(authorized(null, ""), true);
  assert.equal(authorized(null, "s3cret"), false);
  assert.equal(authorized("Bearer s3cret", "s3cret"), true);
  assert.equal(authorized("bearer s3cret", "s3cret"), true);
  assert.equal(authorized("Bearer s3cre", "s3cret"), false);
  assert.equal(authorized("Bearer s3cret x", "s3cret"), false);
  assert.equal(authorized(`Basic ${btoa("ops:s3cret")}`, "s3cret"), true);
  assert.equal(authorized(`Basic ${btoa("ops:wrong")}`, "s3cret"), false);
  assert.equal(authorized("Basic !!!", "s3cret"), false);
  assert.deepEqual(pageOf(new URLSearchParams("")), { offset: 0, limit: 100 });
  assert.deepEqual(pageOf(new URLSearchParams("offset=5&limit=99999")), { offset: 5, limit: 1000 });
  assert.match(pageOf(new URLSearchParams("limit=-1")) as string, /limit must be a whole number/);
  assert.match(pageOf(new URLSearchParams("offset=1e3")) as string, /offset/);
  assert.match(pageOf(new URLSearchParams("limit=0")) as string, /limit must be 1-1000/);
});

Deno.test("the status page escapes hostile senders, recipients, errors and domains", () => {
  const html = renderStatusPage({
    hostname: "mx.example.org",
    version: "0",
    deno: "2",
    pid: 1,
    startedAt: 0,
    now: 60_000,
    refreshSeconds: 30,
    queue: {
      byState: { incoming: 0, active: 0, deferred: 1, hold: 0 },
      byAge: {},
      total: 1,
      oldestAgeSeconds: 60,
    },
    connectionsIn: 0,
    cache: { hits: 0, misses: 0 },
    fsyncsPerMessage: null,
    history: [{ minute: 0, received: 1, delivered: 0, deferred: 1, bounced: 0 }],
    oldestDeferred: [{
      queue_id: "Q1",
      arrival_time: 0,
      sender: HOSTILE_SENDER,
      recipients: [`"><script>alert(4)</script>@x.test`],
      attempts: 1,
      last_error: HOSTILE_ERROR,
    }],
    topDeferred: [{ domain: "<b>x.test</b>", deferrals: 1 }],
    config: [["spool", "/var/<spool>"]],
  });
  assert.doesNotMatch(html, /<script|<img|<b>/i);
  assert.ok(html.includes(esc(HOSTILE_SENDER)));
  assert.ok(html.includes(esc(HOSTILE_ERROR)));
  assert.equal(
    esc(`<a href="x" onclick='y'>&`),
    "&#60;a href=&#34;x&#34; onclick=&#39;y&#39;&#62;&#38;",
  );
});

/** Starts skiff with [http] on a fresh port; mail to evil.test defers with a hostile error text. */
async function startWithHttp(extra = ""): Promise<{ server: SkiffServer; base: string }> {
  const httpPort = await freePort();
  const server = await SkiffServer.start({
    queue: "retry_min = 600\nretry_max = 1200",
    toml: `[delivery]
dns_timeout = 1
[[route]]
domain = "evil.test"
type = "error"
dsn = "4.3.0"
text = ${JSON.stringify(HOSTILE_ERROR)}
[http]
address = "127.0.0.1:${httpPort}"
${extra}
`,
  });
  return { server, base: `http://127.0.0.1:${httpPort}` };
}

/** One sample of a parsed exposition. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text with prometheus_client's own parser (python3-prometheus-client). */
async function parseWithPrometheus(text: string): Promise<Sample[]> {
  const script = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
`;
  const r = await runCommand(["/usr/bin/python3", "-c", script], { stdin: text });
  assert.equal(r.code, 0, `the Prometheus parser refused the exposition: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const hits = samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  return hits.reduce((n, s) => n + s.value, 0);
}

/** Sends a transaction whose RCPT is refused (a syntax error: 5.x). */
async function refusedRecipient(port: number): Promise<void> {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.line("EHLO client.test");
    await c.reply();
    await c.line("MAIL FROM:<a@localhost>");
    await c.reply();
    await c.line("RCPT TO:<no-at-sign>");
    const r = await c.reply();
    assert.match(r?.at(-1) ?? "", /^5/);
    await c.line("QUIT");
    await c.reply();
  } finally {
    c.close();
  }
}

peerTest(
  "/metrics after real mail shows the right counts and parses with prometheus_client",
  [PEERS.python3, PROM_PARSER],
  async () => {
    const { server, base } = await startWithHttp();
    try {
      await submitMessage(server.port, { to: "bob@localhost" });
      await submitMessage(server.port, { to: ["bob@localhost", "carol@localhost"] });
      await submitMessage(server.port, { to: "x@evil.test" });
      await refusedRecipient(server.port);
      await waitFor(async () => (await maildirFiles(`${server.dir}/mail/carol`)).length === 1);
      await waitFor(async () => (await maildirFiles(`${server.dir}/mail/bob`)).length === 2);
      await server.waitForLog(/status=deferred/);
      await server.waitForLog(/removed id=.*\n(.|\n)*removed id=/);
      const res = await fetch(`${base}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const samples = await parseWithPrometheus(await res.text());
      const listener = `127.0.0.1:${server.port}`;
      assert.equal(value(samples, "skiff_messages_received_total", { listener }), 3);
      assert.equal(value(samples, "skiff_recipients_delivered_total", { transport: "local" }), 3);
      assert.equal(
        value(samples, "skiff_recipients_deferred_total", { transport: "error", reason: "system" }),
        1,
      );
      assert.equal(value(samples, "skiff_recipients_bounced_total"), 0);
      assert.equal(
        value(samples, "skiff_smtp_rejections_total", { listener, class: "permanent" }),
        1,
      );
      assert.equal(value(samples, "skiff_queue_messages", { state: "deferred" }), 1);
      assert.equal(value(samples, "skiff_queue_messages", { state: "incoming" }), 0);
      assert.equal(value(samples, "skiff_queue_messages_by_age", { age: "0-5m" }), 1);
      assert.equal(value(samples, "skiff_accept_latency_seconds_count"), 3);
      assert.equal(
        value(samples, "skiff_delivery_latency_seconds_count", { transport: "local" }),
        3,
      );
      assert.equal(value(samples, "skiff_connections_inbound", { listener }), 0);
      // Each accepted (sealed) message: one sync after its rename (kind "dir", possibly
      // shared); the delivered results of each of the two delivered messages are fdatasynced
      // (kind "data"; one message's results may share one).
      assert.ok(value(samples, "skiff_spool_fsyncs_total", { kind: "data" }) >= 2);
      assert.ok(value(samples, "skiff_spool_fsyncs_total", { kind: "dir" }) >= 1);
      assert.equal(value(samples, "skiff_worker_failures_total"), 0);
      assert.equal(value(samples, "skiff_build_info"), 1);
      // The manager's memory: a live process is tens of MB, and its heap's used part fits in it.
      assert.ok(value(samples, "process_resident_memory_bytes") > 10 * 1024 * 1024);
      const used = value(samples, "skiff_heap_bytes", { kind: "used" });
      assert.ok(used > 0 && used <= value(samples, "skiff_heap_bytes", { kind: "total" }));
      // /queue.json pages the same entries as `skiff queue list --json`.
      const listed = await runSkiff(["--config", server.configPath, "queue", "list", "--json"]);
      const lines = listed.stdout.trim().split("\n").map((l) => JSON.parse(l));
      const page = await (await fetch(`${base}/queue.json?offset=0&limit=5`)).json();
      assert.equal(page.total, 1);
      assert.deepEqual(page.messages, lines);
      const empty = await (await fetch(`${base}/queue.json?offset=1`)).json();
      assert.deepEqual(empty.messages, []);
      const bad = await fetch(`${base}/queue.json?limit=abc`);
      assert.equal(bad.status, 400);
      assert.match(await bad.text(), /limit must be a whole number/);
      const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
      assert.equal(post.status, 405);
      await post.body?.cancel();
      const missing = await fetch(`${base}/nothing`);
      assert.equal(missing.status, 404);
      await missing.body?.cancel();
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);

Deno.test({
  name: "a configured token is required: 401 without it, 200 with Bearer or Basic",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { server, base } = await startWithHttp('token = "t0ken-for-tests"');
    try {
      for (const path of ["/metrics", "/", "/queue.json"]) {
        const none = await fetch(base + path);
        assert.equal(none.status, 401, path);
        assert.match(none.headers.get("www-authenticate") ?? "", /Bearer realm="skiff"/);
        await none.body?.cancel();
        const wrong = await fetch(base + path, { headers: { authorization: "Bearer nope" } });
        assert.equal(wrong.status, 401, path);
        await wrong.body?.cancel();
        const good = await fetch(base + path, {
          headers: { authorization: "Bearer t0ken-for-tests" },
        });
        assert.equal(good.status, 200, path);
        await good.body?.cancel();
      }
      const basic = await fetch(`${base}/`, {
        headers: { authorization: `Basic ${btoa("ops:t0ken-for-tests")}` },
      });
      assert.equal(basic.status, 200);
      assert.match(basic.headers.get("content-security-policy") ?? "", /default-src 'none'/);
      await basic.body?.cancel();
      // Bounds hold before the token is even looked at.
      const long = await fetch(`${base}/?q=${"a".repeat(3000)}`);
      assert.equal(long.status, 414);
      await long.body?.cancel();
      const put = await fetch(`${base}/metrics`, { method: "PUT", body: "x".repeat(100) });
      assert.equal(put.status, 405);
      await put.body?.cancel();
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "skiff serve refuses a non-loopback [http] address, and stops when the address is in use",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-http-" });
    try {
      const path = `${dir}/skiff.toml`;
      await Deno.writeTextFile(
        path,
        `spool_dir = "${dir}/spool"\n[http]\naddress = "0.0.0.0:8025"\n`,
      );
      const r = await runSkiff(["--config", path, "serve"]);
      assert.equal(r.code, 78, r.stderr);
      assert.match(r.stderr, /key "http\.address": expected a loopback address/);
      assert.match(r.stderr, /allow_remote = true/);
      // An address in use stops start-up with the address named (EX_UNAVAILABLE).
      const busy = Deno.listen({ hostname: "127.0.0.1", port: await freePort() });
      try {
        const port = (busy.addr as Deno.NetAddr).port;
        await Deno.writeTextFile(
          path,
          `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:${await freePort()}"\n` +
            `[http]\naddress = "127.0.0.1:${port}"\n`,
        );
        const inUse = await runSkiff(["--config", path, "serve"]);
        assert.equal(inUse.code, 69, inUse.stderr);
        assert.match(
          inUse.stderr,
          new RegExp(`Cannot listen on http\\.address 127\\.0\\.0\\.1:${port}`),
        );
      } finally {
        busy.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Runs headless Chromium on url with extra flags; its stdout. */
async function chromium(url: string, flags: string[]): Promise<string> {
  const profile = await Deno.makeTempDir({ prefix: "skiff-chromium-" });
  try {
    const r = await runCommand([
      CHROMIUM.bin,
      "--headless",
      "--no-sandbox", // CI runs as root, where Chromium's sandbox cannot start
      "--disable-gpu",
      "--no-first-run",
      "--disable-extensions",
      "--disable-background-networking",
      `--user-data-dir=${profile}`,
      "--timeout=15000",
      ...flags,
      url,
    ]);
    assert.equal(r.code, 0, `chromium failed: ${r.stderr.slice(-2000)}`);
    return r.stdout;
  } finally {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

/** The text of the element with this id in a serialized DOM. */
function byId(dom: string, id: string): string {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom);
  assert.ok(m, `no element #${id} in the page`);
  return m[1];
}

peerTest(
  "the status page in headless Chromium shows the queue as `skiff queue list` does, escaped",
  [CHROMIUM],
  async () => {
    const { server, base } = await startWithHttp();
    try {
      await submitMessage(server.port, { to: "bob@localhost" });
      await submitMessage(server.port, { from: HOSTILE_SENDER, to: "x@evil.test" });
      await submitMessage(server.port, { to: ["y@evil.test", "bob@localhost"] });
      await waitFor(async () => (await maildirFiles(`${server.dir}/mail/bob`)).length === 2);
      await server.waitForLog(/status=deferred(.|\n)*status=deferred/);
      const held = await submitMessage(server.port, { to: "z@evil.test" });
      await server.waitForLog(new RegExp(`deferred id=${held}`));
      const hold = await runSkiff(["--config", server.configPath, "queue", "hold", held]);
      assert.equal(hold.code, 0, hold.stderr);
      const listed = await runSkiff(["--config", server.configPath, "queue", "list", "--json"]);
      const entries = listed.stdout.trim().split("\n").map((l) => JSON.parse(l));
      const count = (q: string) => String(entries.filter((e) => e.queue_name === q).length);
      const dom = await chromium(`${base}/`, ["--dump-dom"]);
      assert.equal(byId(dom, "q-total"), String(entries.length));
      assert.equal(byId(dom, "q-deferred"), count("deferred"));
      assert.equal(byId(dom, "q-hold"), count("hold"));
      assert.equal(byId(dom, "q-active"), count("active"));
      assert.equal(byId(dom, "q-incoming"), count("incoming"));
      assert.equal(count("deferred"), "2");
      assert.equal(count("hold"), "1");
      // Every deferred message is listed with its id.
      for (const e of entries.filter((e) => e.queue_name === "deferred")) {
        assert.ok(dom.includes(e.queue_id), `${e.queue_id} missing from the page`);
      }
      // Hostile text arrived as text: no element was made of it.
      assert.ok(dom.includes("&lt;script&gt;alert(1)&lt;/script&gt;"), "the sender is shown");
      assert.ok(dom.includes("&lt;img src=x onerror=alert(2)&gt;"), "the error text is shown");
      assert.doesNotMatch(dom, /<script|<img/i);
      const shot = Deno.env.get("SKIFF_SCREENSHOT") ??
        `${await Deno.makeTempDir({ prefix: "skiff-shot-" })}/status-page.png`;
      await chromium(`${base}/`, [`--screenshot=${shot}`, "--window-size=1280,1150"]);
      const png = await Deno.readFile(shot);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
      assert.ok(
        png.length > 10_000,
        `screenshot of ${png.length} bytes is too small to show a page`,
      );
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);

Deno.test("docs/monitoring.md lists exactly the metrics /metrics serves", async () => {
  const collector = new Collector({
    queue: () => Promise.resolve(summarize([], Date.now())),
  });
  const served = collector.registry.getMetricsAsArray().map((m) => m.name).sort();
  const doc = await Deno.readTextFile(new URL("../docs/monitoring.md", import.meta.url));
  const documented = [...doc.matchAll(/^\| `((?:skiff|process)_[a-z_]+)` *\|/gm)].map((m) => m[1])
    .sort();
  assert.deepEqual(documented, served);
});

const PROMTOOL: Peer = { bin: "/usr/bin/promtool", pkg: "prometheus" };

peerTest(
  "the sample alert rules in docs/monitoring.md pass promtool check rules",
  [PROMTOOL],
  async () => {
    const doc = await Deno.readTextFile(new URL("../docs/monitoring.md", import.meta.url));
    const section = doc.slice(doc.indexOf("## Alert rules"));
    const rules = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(rules, "no yaml block under ## Alert rules");
    const dir = await Deno.makeTempDir({ prefix: "skiff-rules-" });
    try {
      await Deno.writeTextFile(`${dir}/skiff.rules.yml`, rules);
      const r = await runCommand([PROMTOOL.bin, "check", "rules", `${dir}/skiff.rules.yml`]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /SUCCESS: 6 rules found/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("the queue snapshot is reused for 2 s, then served stale while a new one is read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skiff-view-" });
  try {
    const spool = new Spool(dir);
    await spool.init();
    let now = 1_000_000;
    const view = new QueueView({ spoolDir: dir, now: () => now });
    const add = async () => {
      const w = await spool.begin();
      await w.write(new TextEncoder().encode("Subject: x\r\n\r\nx\r\n"));
      await w.commit({
        id: w.id,
        from: "a@localhost",
        recipients: [{ address: "b@localhost" }],
        received: now,
        client: { address: "127.0.0.1", helo: "t" },
        protocol: "SMTP",
        size: 17,
      });
    };
    assert.equal((await view.entries()).length, 0); // the first read waits for the spool
    await add();
    now += 1_000;
    assert.equal((await view.entries()).length, 0, "reused within 2 s");
    now += 1_500;
    assert.equal((await view.entries()).length, 0, "stale at once, a read starts behind it");
    await waitFor(async () => (await view.entries()).length === 1, 5_000, "the new snapshot");
    assert.equal((await view.summary()).byState.incoming, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

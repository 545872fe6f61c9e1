/**
 * The streamed queue listing (issue 13) on queues of thousands of messages
 * written straight into a spool: every message once and in order whatever
 * the slice boundaries, a corrupt journal in the middle reported in its
 * place while the listing goes on, the journal summary agreeing with the
 * spool's own replay, and through a real manager: `queue list --json` and
 * mailq as before (and the same as without a manager), clients that hang up
 * midway leave the manager answering, and users other than root and
 * skiff's own are refused with exit 77.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { listedRecipients, summarizeJournal } from "../lib/control/journal_summary.ts";
import {
  collectQueue,
  entryOf,
  isUnreadable,
  type ListItem,
  streamQueue,
} from "../lib/control/queue_list.ts";
import { encodeRecords, type JournalRecord, parseJournal, replay } from "../lib/spool/mod.ts";
import { TORN_MARK } from "../lib/spool/records.ts";
import { runSkiff, skiffArgs, SkiffServer } from "./harness.ts";
import { fillSpool, writeCorrupt } from "./queue_fill.ts";
import { runCommand } from "./run_cmd.ts";

const ids = (items: ListItem[]) => items.map((i) => i.queue_id);

Deno.test("streamQueue: every message once, in id order, at slice size - 1, = and + 1", async () => {
  for (const n of [255, 256, 257]) {
    const spool = await Deno.makeTempDir({ prefix: "skiff-list-" });
    try {
      const made = fillSpool(spool, n);
      const slices: ListItem[][] = [];
      for await (const s of streamQueue(spool)) slices.push(s);
      assert.ok(slices.every((s) => s.length <= 256), `${n}: a slice over 256`);
      const all = slices.flat();
      assert.deepEqual(ids(all), made, `${n} messages`);
      assert.ok(all.every((e) => !isUnreadable(e) && e.queue_name === "deferred"));
    } finally {
      await Deno.remove(spool, { recursive: true });
    }
  }
});

Deno.test("streamQueue: thousands with held ones among them, small slices, merged by id", async () => {
  const spool = await Deno.makeTempDir({ prefix: "skiff-list-" });
  try {
    const made = [
      ...fillSpool(spool, 1200),
      ...fillSpool(spool, 101, { held: true }),
      ...fillSpool(spool, 1200),
    ];
    for (const sliceFiles of [7, 256]) {
      const all = await collectQueue(spool, { sliceFiles });
      assert.deepEqual(ids(all), made, `slices of ${sliceFiles}`);
      const held = all.filter((e) => !isUnreadable(e) && e.queue_name === "hold");
      assert.deepEqual(ids(held), made.slice(1200, 1301));
    }
  } finally {
    await Deno.remove(spool, { recursive: true });
  }
});

Deno.test("streamQueue: a corrupt journal in the middle is reported in its place; the rest is listed", async () => {
  const spool = await Deno.makeTempDir({ prefix: "skiff-list-" });
  try {
    const made = fillSpool(spool, 600);
    // Same time part as the 300th id, a later random part: sorts right after it.
    const bad = writeCorrupt(spool, made[299].slice(0, 12) + "ZZZZZ");
    const all = await collectQueue(spool, { sliceFiles: 64 });
    assert.equal(all.length, 601);
    assert.deepEqual(ids(all), [...made.slice(0, 300), bad, ...made.slice(300)]);
    const item = all[300];
    assert.ok(isUnreadable(item));
    assert.match(item.error, new RegExp(`Spool file ${bad}: Journal line 1 is not JSON`));
  } finally {
    await Deno.remove(spool, { recursive: true });
  }
});

const ENV = {
  t: "envelope" as const,
  id: "0000000000000AAAA",
  from: "a@localhost",
  recipients: [{ address: "x@example.net" }, { address: "y@example.net" }, {
    address: "z@example.net",
  }],
  received: 1_700_000_000_000,
  client: { address: "127.0.0.1", helo: "t" },
  protocol: "ESMTP",
  size: 42,
};

const RESULTS: JournalRecord[][] = [
  [],
  [{ t: "deferred", rcpt: 0, at: 1, until: 5_000, dsn: "4.0.0", text: "busy" }],
  [
    { t: "deferred", rcpt: 0, at: 1, until: 5_000, dsn: "4.0.0", text: "busy" },
    { t: "deferred", rcpt: 0, at: 2, until: 9_000, dsn: "4.0.0", text: "" },
    { t: "delivered", rcpt: 1, at: 3, dsn: "2.0.0", text: "ok", relay: "r" },
    { t: "deferred", rcpt: 1, at: 4, until: 9_000, dsn: "4.0.0", text: "late" },
    { t: "failed", rcpt: 2, at: 5, dsn: "5.1.1", text: "no such user" },
    { t: "notified", rcpt: 2, at: 6, action: "failed", id: "0000000000000BBBB" },
  ],
];

Deno.test("summarizeJournal agrees with the spool's replay, torn lines included", () => {
  for (const rest of RESULTS) {
    const lost = "\0".repeat(40) + "\n"; // an unsynced deferral lost in a power loss
    for (const torn of ["", '{"t":"deferred","rcpt":2', `{"t":"x"${TORN_MARK}\n`, lost]) {
      const text = new TextDecoder().decode(encodeRecords([ENV, ...rest])) + torn;
      const state = replay(parseJournal(text));
      const want = entryOf({ id: ENV.id, held: false, state }, new Set()).recipients;
      assert.deepEqual(listedRecipients(summarizeJournal(text)), want, JSON.stringify(rest));
      assert.equal(JSON.stringify(listedRecipients(summarizeJournal(text))), JSON.stringify(want));
    }
  }
});

Deno.test("summarizeJournal names what is wrong with a bad journal", () => {
  const env = JSON.stringify(ENV);
  const bad: [string, RegExp][] = [
    ["not json\n", /Journal line 1 is not JSON/],
    ["[1]\n", /does not start with an envelope|not a record/],
    ['{"t":"deferred","rcpt":0}\n', /does not start with an envelope/],
    [`${env}\n${env}\n`, /second envelope/],
    [`${env}\n{"t":"bogus","rcpt":0}\n`, /Journal line 2: record has unknown type/],
    [`${env}\n{"t":"failed","rcpt":9,"text":"x"}\n`, /Journal line 2: a result for recipient/],
    [`${env}\n{"t":"deferred","rcpt":0,"text":"x","until":"soon"}\n`, /bad until/],
    [JSON.stringify({ ...ENV, size: "big" }) + "\n", /envelope lacks a field or has a bad one/],
    ["", /does not start with an envelope/],
  ];
  for (const [text, re] of bad) assert.throws(() => summarizeJournal(text), re, text);
});

/** Sends one raw request and reads the manager's whole answer. */
function ask(path: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path }, () => s.write(request));
    let out = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => out += d);
    s.on("close", () => resolve(out));
    s.on("error", reject);
  });
}

/** Sends a list request and hangs up after the first bytes of the answer. */
function hangUpMidway(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path }, () => s.write('{"cmd":"queue","op":"list"}\n'));
    s.on("data", (d: Buffer) => {
      s.destroy();
      resolve(d.length);
    });
    s.on("error", reject);
  });
}

const QUEUE = "retry_min = 3600\nretry_max = 7200\nscan_interval = 3600";

Deno.test({
  name: "queue list --json and mailq stream from a manager as they print without one; " +
    "hung-up clients and a corrupt file do not stop it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-list-mgr-" });
    const made = [
      ...fillSpool(`${dir}/spool`, 1500),
      ...fillSpool(`${dir}/spool`, 20, { held: true }),
      ...fillSpool(`${dir}/spool`, 1000),
    ];
    let server: SkiffServer | null = await SkiffServer.start({ dir, queue: QUEUE });
    const cfg = server.configPath;
    try {
      const list = await runSkiff(["--config", cfg, "queue", "list", "--json"]);
      assert.equal(list.code, 0, list.stderr);
      const entries = list.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(entries.map((e) => e.queue_id), made);
      assert.equal(entries.filter((e) => e.queue_name === "hold").length, 20);
      assert.match(entries[0].recipients[0].delay_reason, /test backlog 0/);
      assert.equal(typeof entries[0].recipients[0].next_attempt, "number");

      const mq = await runSkiff(["--config", cfg, "mailq"]);
      assert.equal(mq.code, 0, mq.stderr);
      const lines = mq.stdout.trimEnd().split("\n");
      assert.match(lines[0], /^-Queue ID- +--Size-- ----Arrival Time---- -Sender\/Recipient-+$/);
      assert.match(lines.at(-1)!, /^-- \d+ Kbytes in 2520 Requests\.$/);
      assert.match(mq.stdout, new RegExp(`^${made[1500]}! `, "m"));
      assert.match(
        mq.stdout,
        new RegExp(
          `^${
            made[0]
          }  +\\d+ \\w{3} \\w{3} \\d\\d [\\d:]+  a@localhost\\n {49}\\(connect refused \\(test backlog 0\\)\\)\\n {49}user0@example\\.net\\n\\n`,
          "m",
        ),
      );

      // The wire: a line per message (no "ok"), then the end line with the totals.
      const sock = `${dir}/spool/control.sock`;
      const raw = (await ask(sock, '{"cmd":"queue","op":"list"}\n')).trimEnd().split("\n");
      assert.equal(raw.length, 2521);
      assert.ok(raw.slice(0, -1).every((l) => !Object.hasOwn(JSON.parse(l), "ok")));
      const end = JSON.parse(raw.at(-1)!);
      assert.deepEqual(
        { ...end, oldest: undefined },
        {
          ok: true,
          end: true,
          count: 2520,
          bytes: entries.reduce((n, e) => n + e.message_size, 0),
          unreadable: 0,
          queues: { active: 0, deferred: 2500, incoming: 0, hold: 20 },
          oldest: undefined,
        },
      );
      assert.equal(end.oldest.queue_id, made[0]);

      // Clients that hang up midway: the manager stops that listing and goes on serving.
      for (let i = 0; i < 5; i++) assert.ok((await hangUpMidway(sock)) > 0);
      const st = await runSkiff(["--config", cfg, "status", "--json"]);
      const status = JSON.parse(st.stdout);
      assert.equal(status.pid, server.pid);
      assert.equal(status.queue.total, 2520);
      assert.equal(status.queue.hold, 20);
      assert.equal(status.oldest.queue_id, made[0]);

      // A corrupt file in the middle: named on stderr, everything else listed.
      const bad = writeCorrupt(`${dir}/spool`, made[700].slice(0, 12) + "ZZZZZ");
      const withBad = await runSkiff(["--config", cfg, "mailq"]);
      assert.equal(withBad.code, 0, withBad.stderr);
      assert.match(withBad.stderr, new RegExp(`queue file ${bad} cannot be read: .*not JSON`));
      assert.ok(!withBad.stderr.includes("\x1b"), "an escape sequence reached the terminal");
      assert.match(withBad.stdout, /in 2520 Requests\./);
      const again = await runSkiff(["--config", cfg, "queue", "list", "--json"]);
      assert.equal(again.stdout, list.stdout);
      assert.match(again.stderr, new RegExp(bad));
      await Deno.remove(`${dir}/spool/queue/${bad}`);

      // Without the manager: the CLI reads the spool itself and prints the same.
      await server.stop();
      server = null;
      const direct = await runSkiff(["--config", cfg, "queue", "list", "--json"]);
      assert.equal(direct.code, 0, direct.stderr);
      assert.equal(direct.stdout, list.stdout);
      const directMq = await runSkiff(["--config", cfg, "mailq"]);
      assert.equal(directMq.stdout, mq.stdout);
    } finally {
      await server?.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "queue list and mailq as nobody: refused with exit 77, with and without a manager",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-list-perm-" });
    await Deno.chmod(dir, 0o755); // the spool below stays 0700, root's
    fillSpool(`${dir}/spool`, 10);
    let server: SkiffServer | null = await SkiffServer.start({ dir, queue: QUEUE });
    const asNobody = (...args: string[]) =>
      runCommand([
        "/usr/bin/setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        Deno.execPath(),
        ...skiffArgs(["--config", `${dir}/skiff.toml`, ...args]),
      ], { cwd: "/", env: { HOME: "/" } });
    try {
      for (const running of [true, false]) {
        for (const args of [["queue", "list", "--json"], ["queue", "list"], ["mailq"]]) {
          const r = await asNobody(...args);
          assert.equal(r.code, 77, `${args.join(" ")} (manager ${running}): ${r.stderr}`);
          assert.match(r.stderr, /cannot read the queue .*only root and the user skiff runs as/);
          assert.equal(r.stdout, "");
        }
        if (running) {
          await server!.stop();
          server = null;
        }
      }
    } finally {
      await server?.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

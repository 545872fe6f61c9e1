/**
 * The mail log's line formats: key=value text that stays on one line whatever
 * a value holds, and one JSON object per line when configured.
 */
import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { delaySeconds, formatJson, formatText } from "../lib/log/log.ts";
import { freePort, runSkiff, skiffArgs, submitMessage, waitFor } from "./harness.ts";

function record(properties: Record<string, unknown>): LogRecord {
  return {
    category: ["skiff"],
    level: "info",
    message: ["delivered"],
    rawMessage: "delivered",
    timestamp: Date.UTC(2026, 10, 29, 17, 0, 0),
    properties,
  };
}

Deno.test("text lines are key=value, quoted where needed, never split", () => {
  const line = formatText(record({
    id: "D2510W1T00006TAQF",
    to: "<bob@localhost>",
    relay: "local",
    delay: "0.1",
    dsn: "2.0.0",
    status: "sent",
    text: "Delivered\r\nInjected: yes",
    skipped: undefined,
  }));
  assert.equal(
    line,
    "2026-11-29T17:00:00.000Z info delivered id=D2510W1T00006TAQF to=<bob@localhost> relay=local " +
      'delay=0.1 dsn=2.0.0 status=sent text="Delivered\\r\\nInjected: yes"\n',
  );
  assert.equal(line.split("\n").length, 2);
});

Deno.test("JSON lines carry the event and every field", () => {
  const line = formatJson(record({ id: "X", status: "sent" }));
  assert.ok(line.endsWith("\n"));
  assert.deepEqual(JSON.parse(line), {
    ts: "2026-11-29T17:00:00.000Z",
    level: "info",
    event: "delivered",
    id: "X",
    status: "sent",
  });
});

Deno.test("delay is seconds with one decimal, as Postfix logs it", () => {
  assert.equal(delaySeconds(1000, 3460), "2.5");
});

Deno.test({
  name:
    "[log] file: the manager's lines go to the file; reload reopens it after logrotate moved it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-logfile-" });
    const port = await freePort();
    const config = `${dir}/skiff.toml`;
    await Deno.writeTextFile(
      config,
      `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:${port}"\n` +
        `[local]\nmaildir_root = "${dir}/mail"\n[log]\nfile = "${dir}/mail.log"\n` +
        `[delivery]\nnameserver = "127.0.0.1:1"\n`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: skiffArgs(["--config", config, "serve"]),
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const logHas = (path: string, re: RegExp) => async () => {
      try {
        return re.test(await Deno.readTextFile(path));
      } catch {
        return false;
      }
    };
    try {
      await waitFor(logHas(`${dir}/mail.log`, / ready /), 30_000, "ready in the log file");
      const first = await submitMessage(port, { to: "bob@localhost" });
      // Rotate only after the first message's last line (delivery happens in the background and
      // would otherwise log into the new file, which this test reads as "after the rotation").
      await waitFor(logHas(`${dir}/mail.log`, new RegExp(`removed id=${first}`)), 15_000, "1st");
      await Deno.rename(`${dir}/mail.log`, `${dir}/mail.log.1`);
      const r = await runSkiff(["--config", config, "reload"]);
      assert.equal(r.code, 0, r.stderr);
      const second = await submitMessage(port, { to: "bob@localhost" });
      await waitFor(logHas(`${dir}/mail.log`, new RegExp(`received id=${second}`)), 15_000, "2nd");
      assert.doesNotMatch(await Deno.readTextFile(`${dir}/mail.log`), new RegExp(first));
      assert.match(
        await Deno.readTextFile(`${dir}/mail.log.1`),
        new RegExp(`received id=${first}`),
      );
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * The mail log's line formats: key=value text that stays on one line whatever
 * a value holds, and one JSON object per line when configured.
 */
import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { delaySeconds, formatJson, formatText } from "../lib/log/log.ts";

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

/** The retry delay: exponential from retry_min, capped at retry_max, ±10% jitter. */
import assert from "node:assert/strict";
import { retryDelayMs } from "../lib/queue/retry.ts";

const policy = { retryMin: 300, retryMax: 14400 };

Deno.test("retry delay doubles per attempt and stops at the cap", () => {
  const mid = () => 0.5; // no jitter
  const table: [number, number][] = [
    [1, 300],
    [2, 600],
    [3, 1200],
    [4, 2400],
    [5, 4800],
    [6, 9600],
    [7, 14400],
    [50, 14400],
  ];
  for (const [attempts, seconds] of table) {
    assert.equal(retryDelayMs(attempts, policy, mid), seconds * 1000, `attempt ${attempts}`);
  }
});

Deno.test("jitter stays within ±10%", () => {
  assert.equal(retryDelayMs(1, policy, () => 0), 270_000);
  assert.equal(retryDelayMs(1, policy, () => 0.999999), 330_000);
  for (let i = 0; i < 1000; i++) {
    const d = retryDelayMs(3, policy);
    assert.ok(d >= 1_080_000 && d <= 1_320_000, String(d));
  }
});

Deno.test("attempt counts below one are treated as the first", () => {
  assert.equal(retryDelayMs(0, policy, () => 0.5), 300_000);
  assert.equal(retryDelayMs(-3, policy, () => 0.5), 300_000);
});

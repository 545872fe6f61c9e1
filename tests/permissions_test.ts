/**
 * skiff's permission list is written once (lib/sys/self_command.ts); the one
 * place that cannot import it, deno.json's start task, must grant exactly
 * the same flags, so `deno task start`, the compiled binary and the copies
 * skiff starts of itself never differ in what they may do.
 */
import assert from "node:assert/strict";
import { PERMISSION_FLAGS, selfCommand, V8_FLAGS } from "../lib/sys/self_command.ts";

Deno.test("deno.json's start task grants exactly PERMISSION_FLAGS", async () => {
  const json = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const start = String(json.tasks.start).split(/\s+/);
  assert.deepEqual(start.filter((a) => a.startsWith("--allow-")), [...PERMISSION_FLAGS]);
});

Deno.test("the start task, the installer's launcher and self-started copies use exactly V8_FLAGS", async () => {
  const json = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const start = String(json.tasks.start).split(/\s+/);
  assert.deepEqual(start.filter((a) => a.startsWith("--v8-flags")), [...V8_FLAGS]);
  const install = await Deno.readTextFile(new URL("../scripts/install.sh", import.meta.url));
  const launcher = install.split(/\s+/).filter((a) => a.startsWith("--v8-flags"));
  assert.deepEqual(launcher, [...V8_FLAGS]);
  const self = selfCommand(["version"]).args.filter((a) => a.startsWith("--v8-flags"));
  assert.deepEqual(self, [...V8_FLAGS]);
});

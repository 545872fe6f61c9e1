/**
 * The import check (scripts/check_imports.ts) and its documentation agree:
 * the layer picture in docs/architecture.md names the same folders, in the
 * same order, as the script's LAYERS table; and the checker itself finds a
 * cycle and an import against the layers in a small made-up graph.
 */
import assert from "node:assert/strict";
import { cycles, LAYERS, wrongDirections } from "../scripts/check_imports.ts";

Deno.test("docs/architecture.md shows the layers of scripts/check_imports.ts, top down", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/architecture.md", import.meta.url));
  const section = doc.slice(doc.indexOf("## Layers of `lib/`"));
  const start = section.indexOf("```\n") + 4;
  const picture = section.slice(start, section.indexOf("\n```", start));
  const rows = picture.split("\n").map((line) =>
    line.replace(/\(.*\)\s*$/, "").trim().split(/\s+/)
  );
  assert.deepEqual(rows, [...LAYERS].reverse().map((l) => [...l]));
});

Deno.test("the checker reports a cycle and an import against the layers", () => {
  const graph = {
    "lib/spool/a.ts": ["lib/spool/b.ts"],
    "lib/spool/b.ts": ["lib/spool/a.ts", "lib/queue/c.ts"],
    "lib/queue/c.ts": ["lib/sys/d.ts"],
    "lib/sys/d.ts": [],
  };
  assert.deepEqual(cycles(graph), [["lib/spool/a.ts", "lib/spool/b.ts"]]);
  assert.deepEqual(wrongDirections(graph), [
    "lib/spool/b.ts -> lib/queue/c.ts (spool may not import queue: same or higher layer)",
  ]);
  assert.deepEqual(wrongDirections({ "lib/nowhere/x.ts": ["lib/sys/d.ts"] }), [
    "lib/nowhere/x.ts -> lib/sys/d.ts (lib/nowhere has no layer)",
  ]);
});

/**
 * Fuzzing of the config loader: the documented example (conf/skiff.toml)
 * with values swapped for hostile ones, lines dropped, repeated or replaced
 * by garbage. Whatever the text, parseConfig returns a Config or throws a
 * ConfigError (naming file and key, with no raw control character in its
 * message) and never anything else: a typo must never crash `skiff serve`.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ConfigError, parseConfig } from "../lib/config/load.ts";
import { ROOT } from "./harness.ts";
import { arbHostile, runs } from "./fuzz_arbitraries.ts";

const EXAMPLE = Deno.readTextFileSync(`${ROOT}conf/skiff.toml`).split("\n");
/** Indexes of `key = value` lines (uncommented) in the example. */
const ASSIGNMENTS = EXAMPLE.flatMap((l, i) => /^\s*[A-Za-z_]+\s*=/.test(l) ? [i] : []);

/** A TOML value, from plausible to hostile. */
const tomlValue: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "9007199254740993",
    "true",
    "[]",
    "{}",
    '""',
    '"127.0.0.1:25"',
    '"[::1]:0"',
    '"unix:/tmp/x.sock"',
    '"0.0.0.0/0"',
    '"smtp:[127.0.0.1]:25"',
    '[1, "a"]',
    '"/"',
    '"\\u0000"',
    "1979-05-27T07:32:00Z",
    "'''\nmulti\n'''",
  ),
  fc.integer().map(String),
  fc.double().map(String),
  arbHostile.map((s) => JSON.stringify(s)),
  fc.array(arbHostile.map((s) => JSON.stringify(s)), { maxLength: 3 }).map((a) =>
    `[${a.join(", ")}]`
  ),
);

/** Edits applied to the example, in order. */
const edit = fc.oneof(
  fc.tuple(fc.constant("value" as const), fc.nat(), tomlValue),
  fc.tuple(fc.constant("drop" as const), fc.nat(), fc.constant("")),
  fc.tuple(fc.constant("repeat" as const), fc.nat(), fc.constant("")),
  fc.tuple(
    fc.constant("garbage" as const),
    fc.nat(),
    fc.oneof(fc.string({ unit: "binary", maxLength: 30 }), arbHostile),
  ),
);

function apply(edits: [string, number, string][]): string {
  const lines = [...EXAMPLE];
  for (const [kind, n, v] of edits) {
    const i = ASSIGNMENTS[n % ASSIGNMENTS.length];
    if (kind === "value") lines[i] = lines[i].replace(/=.*$/, `= ${v}`);
    else if (kind === "drop") lines[i] = "";
    else if (kind === "repeat") lines.splice(i, 0, lines[i]);
    else lines[n % lines.length] = v;
  }
  return lines.join("\n");
}

Deno.test("fuzz: the config loader returns a Config or throws ConfigError, nothing else", () => {
  let errors = 0;
  fc.assert(
    fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
      const text = apply(edits);
      try {
        parseConfig(text, "fuzz.toml", { cwd: "/tmp" });
      } catch (e) {
        assert.ok(e instanceof ConfigError, `${e}\n--- config:\n${text}`);
        assert.equal(e.file, "fuzz.toml");
        assert.ok(e.key !== "", "names a key");
        errors++;
      }
    }),
    { numRuns: runs(400) },
  );
  assert.ok(errors > 0, "some edits were refused");
});

/**
 * `deno task fuzz`: the fuzz set run long. CI runs the same property tests
 * with their small built-in counts (part of `deno task test`); this runs
 * them with FUZZ_RUNS (default 20000: each property's CI count scaled by
 * FUZZ_RUNS/1000, never below it) and prints the wall time, for the figures
 * in docs/reliability.md. Extra arguments go to `deno test` (e.g. --filter).
 */

/** The fuzz set: every file holding fast-check properties over a parser. */
export const FUZZ_FILES = [
  "tests/smtp_fuzz_test.ts",
  "tests/session_fuzz_test.ts",
  "tests/spool_journal_test.ts",
  "tests/fuzz_envelope_test.ts",
  "tests/fuzz_client_test.ts",
  "tests/fuzz_config_test.ts",
];

if (import.meta.main) {
  const runs = Deno.env.get("FUZZ_RUNS") ?? "20000";
  if (!/^[1-9]\d{0,8}$/.test(runs)) {
    console.error(`FUZZ_RUNS must be a positive integer, not ${JSON.stringify(runs)}`);
    Deno.exit(64);
  }
  const root = new URL("..", import.meta.url).pathname;
  const args = ["test", "--allow-all", ...Deno.args, ...FUZZ_FILES];
  console.error(`fuzz: FUZZ_RUNS=${runs} deno ${args.join(" ")}`);
  const started = performance.now();
  const status = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { FUZZ_RUNS: runs },
    stdin: "null",
  }).spawn().status;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.error(`fuzz: FUZZ_RUNS=${runs}: ${status.success ? "passed" : "FAILED"} in ${seconds} s`);
  Deno.exit(status.code);
}

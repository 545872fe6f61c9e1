/**
 * `deno task compile`: builds dist/skiff, one executable with skiff's
 * permissions baked in (the same list `deno task start` grants, nothing
 * broader). `deno compile` needs Deno's runtime (denort) for this version:
 * it downloads it, or takes DENORT_BIN. Where neither works it says so in
 * one line with what to set, instead of Deno's backtrace.
 *
 * Usage: deno run --allow-run --allow-read --allow-write --allow-env scripts/compile.ts [--output FILE]
 */

import { PERMISSION_FLAGS, V8_FLAGS } from "../lib/sys/self_command.ts";

/** The permissions skiff runs with (lib/sys/self_command.ts), re-exported for the tests. */
export { PERMISSION_FLAGS };

if (import.meta.main) {
  const i = Deno.args.indexOf("--output");
  const output = i >= 0 ? Deno.args[i + 1] : "dist/skiff";
  const root = new URL("..", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "--quiet",
      ...PERMISSION_FLAGS,
      ...V8_FLAGS,
      "--output",
      output,
      `${root}main.ts`,
    ],
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  if (out.success) {
    // A wrong DENORT_BIN still "compiles" (the payload is appended to any file): run the result.
    const smoke = await new Deno.Command(output, { args: ["version"], stdout: "piped" })
      .output().catch(() => null);
    const said = smoke ? new TextDecoder().decode(smoke.stdout) : "";
    if (!smoke?.success || !said.startsWith("skiff ")) {
      console.error(
        `compile: ${output} does not run ("skiff version" failed): DENORT_BIN=` +
          `${Deno.env.get("DENORT_BIN") ?? "(unset)"} is not a denort ${Deno.version.deno}`,
      );
      await Deno.remove(output).catch(() => {});
      Deno.exit(1);
    }
    console.log(`compile: wrote ${output} (${said.trim()})`);
    Deno.exit(0);
  }
  if (/Setting up base binary|denort/i.test(err)) {
    const version = Deno.version.deno;
    const bin = Deno.env.get("DENORT_BIN");
    console.error(
      bin
        ? `compile: DENORT_BIN=${bin} is not a usable denort ${version} (${lastLine(err)})`
        : `compile: Deno's runtime (denort ${version}) could not be downloaded; set ` +
          `DENORT_BIN to a denort ${version} binary (from denort-${Deno.build.target}.zip of ` +
          `the Deno ${version} release) and run again`,
    );
    Deno.exit(1);
  }
  console.error(err.trimEnd());
  Deno.exit(out.code || 1);
}

function lastLine(text: string): string {
  return text.trim().split("\n").pop()?.trim() ?? "";
}

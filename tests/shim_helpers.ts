/**
 * Helpers for tests of the sendmail shim as real programs call it: wrapper
 * executables named `sendmail`, `mailq` and `newaliases` that exec the deno
 * binary with that name as argv[0] (what a link to the compiled binary
 * gives; a symlink straight to deno would run the deno CLI), and a way to
 * run them as `nobody`. Under `deno run` a non-root user needs a readable
 * deno binary, repo and DENO_DIR: /root is 0700, so the npm cache is copied
 * once into a world-readable directory. (A compiled binary needs none of it.)
 */
import { PERMISSION_FLAGS, V8_FLAGS } from "../lib/sys/self_command.ts";
import { MAIN, ROOT } from "./harness.ts";
import { runCommand } from "./run_cmd.ts";

const FLAGS = [...PERMISSION_FLAGS, ...V8_FLAGS];

let denoDir: Promise<string> | null = null;

/** A DENO_DIR that `nobody` can read (a copy of this user's npm cache). */
export function readableDenoDir(): Promise<string> {
  denoDir ??= (async () => {
    const info = new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped" });
    const out = JSON.parse(new TextDecoder().decode((await info.output()).stdout));
    const src = out.denoDir as string;
    const dir = await Deno.makeTempDir({ prefix: "skiff-denodir-" });
    const cp = await new Deno.Command("/bin/cp", { args: ["-r", `${src}/npm`, `${dir}/npm`] })
      .output();
    if (!cp.success) throw new Error(`Cannot copy ${src}/npm`);
    const ch = await new Deno.Command("/bin/chmod", { args: ["-R", "a+rX", dir] }).output();
    if (!ch.success) throw new Error(`Cannot chmod ${dir}`);
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    return dir;
  })();
  return denoDir;
}

/** Writes `sendmail`, `mailq` and `newaliases` wrappers for a config into `${dir}/bin`. */
export async function makeShims(dir: string, configPath: string): Promise<string> {
  const bin = `${dir}/bin`;
  await Deno.mkdir(bin, { recursive: true });
  const dd = await readableDenoDir();
  for (const name of ["sendmail", "mailq", "newaliases"]) {
    const argv = [
      name,
      "run",
      "--quiet",
      "--no-prompt",
      "--config",
      `${ROOT}deno.json`,
      ...FLAGS,
      MAIN,
    ];
    await Deno.writeTextFile(
      `${bin}/${name}`,
      `#!/usr/bin/python3
import os, sys
os.environ["SKIFF_CONFIG"] = ${JSON.stringify(configPath)}
os.environ["DENO_DIR"] = ${JSON.stringify(dd)}
os.execv(${JSON.stringify(Deno.execPath())}, ${JSON.stringify(argv)} + sys.argv[1:])
`,
    );
    await Deno.chmod(`${bin}/${name}`, 0o755);
  }
  return bin;
}

/** Runs a program (optionally as nobody via setpriv) and collects its output. */
export function run(
  cmd: string[],
  opts: { stdin?: string; nobody?: boolean; env?: Record<string, string>; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = opts.nobody
    ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", ...cmd]
    : cmd;
  return runCommand(argv, {
    cwd: opts.cwd ?? "/tmp",
    env: { HOME: "/tmp", ...opts.env },
    stdin: opts.stdin,
  });
}

/** TOML for a server with the peercred submission socket and a maildrop inside `dir`. */
export function shimToml(dir: string, extra = ""): string {
  return `[[listener]]
address = "unix:${dir}/run/submit.sock"
auth = "peercred"
[sendmail]
maildrop_dir = "${dir}/maildrop"
${extra}
`;
}

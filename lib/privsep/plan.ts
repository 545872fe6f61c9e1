/**
 * Decides, once at start, how `skiff serve` handles privileges (the names
 * used in logs, `skiff status` and docs/security.md):
 *
 * - `drop`: started as root with `user` set. Bind, prepare the spool,
 *   start the privileged helper, switch to `user`, verify, revoke `run`.
 * - `root`: started as root with `user` unset. Keeps uid 0 (the embedded
 *   default must run with no setup) and says so in one warning.
 * - `user`: started as an ordinary user (who must be `user`, when set).
 *
 * It also checks, for `drop` under `deno run`, that a child running as
 * another uid can load skiff at all (issue 8 finding 6): the deno binary,
 * the main module and DENO_DIR must be reachable by others.
 */
import type { Config, ManagerUser } from "../config/types.ts";
import { denoDir } from "../sys/child_env.ts";
import { userByUid } from "../sys/passwd.ts";

/** How this manager runs. */
export type PrivilegePlan =
  | { mode: "drop"; user: ManagerUser }
  | { mode: "root" }
  | { mode: "user"; user: ManagerUser | null };

/** The one warning for a root manager without `user`. */
export const NO_USER_WARNING =
  'no "user" is set: started as root, skiff serve keeps uid 0 while it parses network input ' +
  '(set user = "NAME", docs/security.md)';

/** The plan for this process; throws when `user` names someone else than a non-root caller. */
export function privilegePlan(cfg: Config, uid = Deno.uid() ?? -1): PrivilegePlan {
  if (uid === 0) return cfg.user ? { mode: "drop", user: cfg.user } : { mode: "root" };
  if (cfg.user && cfg.user.uid !== uid) {
    const me = userByUid(uid)?.name ?? `uid ${uid}`;
    throw new Error(
      `The config says user = "${cfg.user.name}" (uid ${cfg.user.uid}), but skiff was started ` +
        `as ${me}: start it as root (it switches to ${cfg.user.name}) or as ${cfg.user.name}`,
    );
  }
  return { mode: "user", user: cfg.user };
}

/** Problems that would keep a child running as another uid from loading skiff (empty: none). */
export function unreachableByOthers(): string[] {
  if (Deno.build.standalone) {
    return reach(Deno.execPath(), 0o001) ? [] : [`${Deno.execPath()} is not executable by others`];
  }
  const problems: string[] = [];
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const lib = new URL("../../lib", import.meta.url).pathname;
  const dd = denoDir();
  const checks: [string, number, string][] = [
    [Deno.execPath(), 0o001, "the deno binary is not executable by other users"],
    [main, 0o004, "skiff's main module is not readable by other users"],
    [lib, 0o005, "skiff's lib/ is not readable by other users"],
    [dd, 0o005, "DENO_DIR (Deno's module cache) is not readable by other users"],
  ];
  for (const [path, bits, what] of checks) {
    if (!reach(path, bits)) problems.push(`${what}: ${path}`);
  }
  return problems;
}

/** Whether others can traverse every parent of `path` and have `bits` on it. */
function reach(path: string, bits: number): boolean {
  try {
    const parts = path.split("/").filter((p) => p !== "");
    let at = "";
    for (const p of parts.slice(0, -1)) {
      at += `/${p}`;
      if (((Deno.statSync(at).mode ?? 0) & 0o001) === 0) return false;
    }
    return ((Deno.statSync(path).mode ?? 0) & bits) === bits;
  } catch {
    return false;
  }
}

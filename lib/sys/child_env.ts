/**
 * The environment of every process skiff starts (workers, program
 * destinations, the privileged helper): cleared, then rebuilt from this short
 * list, so nothing in the manager's environment (a password, root's HOME)
 * reaches code run for a user. The list (docs/security.md):
 *
 * - `PATH=/usr/bin:/bin`
 * - `HOME`, `USER`, `LOGNAME`: the user the child runs as (from /etc/passwd)
 * - under `deno run` only (a compiled binary needs none): `DENO_DIR` (the
 *   module cache the child loads skiff from, see scripts/deno),
 *   `DENO_NO_UPDATE_CHECK=1`, `NO_COLOR=1`
 *
 * Pipe programs get their own variables on top (lib/deliver/pipe.ts).
 */
import { userByUid } from "./passwd.ts";

/** PATH given to every child. */
export const CHILD_PATH = "/usr/bin:/bin";

/** Who a child runs as, as far as its environment is concerned. */
export interface ChildUser {
  name: string;
  home: string;
}

/**
 * The DENO_DIR this process loads its modules from: $DENO_DIR, else Deno's
 * default under $XDG_CACHE_HOME or $HOME. Read once, before anything revokes `env`.
 */
export function denoDir(): string {
  const env = (k: string) => {
    try {
      return Deno.env.get(k) ?? "";
    } catch {
      return "";
    }
  };
  if (env("DENO_DIR")) return env("DENO_DIR");
  const cache = env("XDG_CACHE_HOME") || `${env("HOME") || "/root"}/.cache`;
  return `${cache}/deno`;
}

let cachedDenoDir: string | null = null;

/** The environment for a child running as `user` (null: this process's own user). */
export function childEnv(user: ChildUser | null, opts: { skiff: boolean }): Record<string, string> {
  const u = user ?? ownUser();
  const env: Record<string, string> = {
    PATH: CHILD_PATH,
    HOME: u.home,
    USER: u.name,
    LOGNAME: u.name,
  };
  if (opts.skiff && !Deno.build.standalone) {
    cachedDenoDir ??= denoDir();
    env.DENO_DIR = cachedDenoDir;
    env.DENO_NO_UPDATE_CHECK = "1";
    env.NO_COLOR = "1";
  }
  return env;
}

/** Remembers DENO_DIR now (call before revoking `env`). */
export function rememberDenoDir(): void {
  cachedDenoDir ??= denoDir();
}

function ownUser(): ChildUser {
  const e = userByUid(Deno.uid() ?? -1);
  return e ? { name: e.name, home: e.home } : { name: `uid${Deno.uid() ?? -1}`, home: "/" };
}

/** The working directory for a child: the user's home when it is a directory, else "/". */
export function childCwd(home: string | undefined): string {
  if (!home || !home.startsWith("/")) return "/";
  try {
    return Deno.statSync(home).isDirectory ? home : "/";
  } catch {
    return "/";
  }
}

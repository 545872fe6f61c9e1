/**
 * The directories the manager keeps working in after it switched to
 * `user`: the spool (and its incoming/, queue/, hold/ and lock file) and the
 * maildrop. Started as root, skiff creates what is missing with `user` as
 * owner and the right mode; what exists with another owner or mode is
 * refused, naming the path, what was found and what is expected, because
 * chowning an operator's directories behind their back hides mistakes (a
 * spool shared with another program, a path typo pointing at /etc). Queue
 * files left by a run as root are refused the same way: the manager could
 * not read them any more.
 */
import type { ManagerUser } from "../config/types.ts";
import { isQueueId } from "../spool/queue_id.ts";

/** Modes skiff expects (docs/security.md). */
export const SPOOL_MODE = 0o700;
export const MAILDROP_DIR_MODE = 0o1733;
const LOCK_MODE = 0o600;

const oct = (m: number) => `0${(m & 0o7777).toString(8)}`;

function fixHint(path: string, u: ManagerUser, mode: number): string {
  return `fix with: chown ${u.name} ${path} && chmod ${oct(mode)} ${path}`;
}

/** Creates `path` owned by u with `mode`, or checks an existing one; throws naming what is wrong. */
async function ownedDir(path: string, u: ManagerUser, mode: number, root: boolean): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    // Missing parents are made searchable (0755): `user` must reach what is inside.
    const parent = path.slice(0, path.lastIndexOf("/"));
    if (parent) await Deno.mkdir(parent, { recursive: true, mode: 0o755 });
    await Deno.mkdir(path, { mode: 0o700 });
    if (root) await Deno.chown(path, u.uid, u.gid);
    await Deno.chmod(path, mode); // mkdir's mode is cut by the umask
    return;
  }
  if (!st.isDirectory) {
    throw new Error(`${path} is not a directory (a symlink or file); expected a directory`);
  }
  const found = st.mode! & 0o7777;
  if (st.uid !== u.uid || found !== mode) {
    throw new Error(
      `${path} is owned by uid ${st.uid} with mode ${oct(found)}; expected owner ${u.name} ` +
        `(uid ${u.uid}) and mode ${oct(mode)}; ${fixHint(path, u, mode)}`,
    );
  }
}

/** Creates the lock file owned by u, or checks the existing one's owner. */
async function ownedFile(path: string, u: ManagerUser, root: boolean): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    const f = await Deno.open(path, { write: true, createNew: true, mode: LOCK_MODE });
    f.close();
    if (root) await Deno.chown(path, u.uid, u.gid);
    return;
  }
  // A root CLI run (`skiff flush`, `skiff queue`) takes the lock before it drops to `user` and
  // may have created the file; it holds nothing, so it is handed over rather than refused.
  if (st.isFile && st.uid === 0 && root) {
    await Deno.chown(path, u.uid, u.gid);
    return;
  }
  if (!st.isFile || st.uid !== u.uid) {
    throw new Error(
      `${path} is owned by uid ${st.uid}${st.isFile ? "" : " and not a regular file"}; ` +
        `expected a file owned by ${u.name} (uid ${u.uid}); fix with: chown ${u.name} ${path}`,
    );
  }
}

/** Refuses queue files another uid owns (a spool used before as root). */
async function ownedEntries(dir: string, u: ManagerUser): Promise<void> {
  let wrong = 0;
  let first = "";
  for await (const e of Deno.readDir(dir)) {
    if (!isQueueId(e.name)) continue;
    const st = await Deno.lstat(`${dir}/${e.name}`).catch(() => null);
    if (st && st.uid !== u.uid) {
      wrong++;
      first ||= `${dir}/${e.name} (uid ${st.uid})`;
    }
  }
  if (wrong > 0) {
    throw new Error(
      `${wrong} spool file(s) are not owned by ${u.name} (uid ${u.uid}), e.g. ${first}; ` +
        `fix with: chown -R ${u.name} ${dir}`,
    );
  }
}

/**
 * Prepares the spool and the maildrop for a manager running as `u`
 * (creating with chown only when `root`); throws an Error naming the path,
 * the owner and mode found and the ones expected.
 */
export async function prepareOwnedDirs(
  spoolDir: string,
  maildropDir: string,
  u: ManagerUser,
  root: boolean,
): Promise<void> {
  const spool = spoolDir.replace(/\/+$/, "") || "/";
  await ownedDir(spool, u, SPOOL_MODE, root);
  for (const sub of ["incoming", "queue", "hold"]) {
    await ownedDir(`${spool}/${sub}`, u, SPOOL_MODE, root);
    await ownedEntries(`${spool}/${sub}`, u);
  }
  await ownedFile(`${spool}/lock`, u, root);
  await ownedDir(maildropDir.replace(/\/+$/, ""), u, MAILDROP_DIR_MODE, root);
}

/**
 * The shim's side of the maildrop (Postfix's postdrop): writes one message
 * into the maildrop directory as the submitting user. The file is created
 * with O_CREAT|O_EXCL (which also refuses to follow a symlink planted at
 * the name), mode 0644, so it is owned by the submitting uid — the identity
 * the pickup trusts — and readable by the manager, which runs as its own
 * `user`, not root (docs/security.md). It is fdatasync'ed and only then marked
 * complete with the owner-execute bit. The directory is mode 1733: anyone
 * may create, nobody but its owner may list it (so nobody learns another
 * drop's random 96-bit name to read it) or remove another user's file.
 */
import { syncDir, writeAll } from "../spool/durable.ts";
import { type DropEnvelope, encodeDrop } from "./format.ts";

/** Mode of the maildrop directory: sticky, writable and searchable by all, listable by its owner. */
export const MAILDROP_MODE = 0o1733;

/** Creates the maildrop directory when missing (its creator owns it; mode 1733). */
export async function ensureMaildrop(dir: string): Promise<void> {
  try {
    const st = await Deno.lstat(dir);
    if (!st.isDirectory) throw new Error(`Maildrop ${dir} is not a directory`);
    return;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.mkdir(dir, { recursive: true });
  await Deno.chmod(dir, MAILDROP_MODE); // mkdir's mode is cut by the umask
}

/** A random file name; never taken from input. */
function dropName(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return `${Date.now().toString(36)}.${
    [...b].map((x) => x.toString(16).padStart(2, "0")).join("")
  }`;
}

/** Drops a message; resolves to the file name. */
export async function dropMessage(
  dir: string,
  env: DropEnvelope,
  content: Uint8Array,
): Promise<string> {
  const name = dropName();
  const path = `${dir}/${name}`;
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o644 });
  try {
    await writeAll(file, encodeDrop(env, content));
    await file.syncData();
  } catch (err) {
    file.close();
    await Deno.remove(path).catch(() => {});
    throw err;
  }
  file.close();
  // The completeness marker, set last: the pickup ignores files without it.
  await Deno.chmod(path, 0o744);
  await syncDir(dir).catch(() => {}); // a directory we cannot open (1733): the file is synced
  return name;
}

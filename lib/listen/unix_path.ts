/**
 * Makes a unix socket path ready to bind: the parent directory exists, and a
 * stale socket left by a crash is removed — but only when nothing answers
 * on it, so a second manager cannot steal a live one's socket. Anything
 * that is not a socket is never deleted.
 */
import * as net from "node:net";

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Prepares `path`; throws with a clear message when it is in use or not a socket. */
export async function prepareUnixPath(path: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true, mode: 0o755 });
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!info.isSocket) {
    throw new Error(`Cannot listen on unix:${path}: it exists and is not a socket`);
  }
  if (await answers(path)) throw new Error(`Cannot listen on unix:${path}: a server answers there`);
  await Deno.remove(path);
}

/**
 * User lookups for local delivery and `user =` settings. Deno has no
 * getpwnam(3), so /etc/passwd is read directly (NSS sources such as LDAP are
 * not consulted: configure numeric "uid:gid" for those users).
 */

/** One passwd entry. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** Parses passwd(5) text. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || line.startsWith("#")) continue;
    const uid = Number(f[2]), gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || f[2] === "" || f[3] === "") continue;
    out.push({ name: f[0], uid, gid, home: f[5] });
  }
  return out;
}

/** The passwd file read through; a test may point it elsewhere. */
let passwdPath = "/etc/passwd";

/** Points lookups at another passwd file (tests). */
export function setPasswdPath(path: string): void {
  passwdPath = path;
}

/** Reads the passwd entries (empty when the file is unreadable). */
export function readPasswd(): PasswdEntry[] {
  try {
    return parsePasswd(Deno.readTextFileSync(passwdPath));
  } catch {
    return [];
  }
}

/** "uid:gid" or a user name from /etc/passwd; null when unknown. */
export function lookupUser(name: string): { uid: number; gid: number } | null {
  const m = /^([0-9]{1,10}):([0-9]{1,10})$/.exec(name);
  if (m) return { uid: Number(m[1]), gid: Number(m[2]) };
  return readPasswd().find((e) => e.name === name) ?? null;
}

/** The passwd entry of a local user (case-insensitive, as local parts are folded). */
export function findLocalUser(name: string): PasswdEntry | null {
  const lower = name.toLowerCase();
  return readPasswd().find((e) => e.name.toLowerCase() === lower) ?? null;
}

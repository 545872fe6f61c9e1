/**
 * Users from /etc/passwd: who a uid is (peer credentials, maildrop file
 * owners, the shim's own uid), a user's uid/gid/home for local delivery and
 * `user =` settings, and the GECOS full name. Deno has no getpwnam(3), so the
 * file is read directly; NSS sources such as LDAP are not consulted
 * (configure numeric "uid:gid" for those users). Identity always comes from
 * a uid the kernel reports, never from $USER or $LOGNAME.
 */

/** One passwd(5) entry. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  /** The full name: the GECOS field up to its first comma. */
  fullName: string;
  home: string;
  /** The login shell (SHELL of a delivery program). */
  shell: string;
}

/** Parses passwd(5) text (pure). Malformed lines are skipped. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || line.startsWith("#") || f[2] === "" || f[3] === "") continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({
      name: f[0],
      uid,
      gid,
      fullName: f[4].split(",")[0].trim(),
      home: f[5],
      shell: f[6],
    });
  }
  return out;
}

const PASSWD = "/etc/passwd";

/** Reads the passwd entries (empty when the file is unreadable). */
export function readPasswd(): PasswdEntry[] {
  try {
    return parsePasswd(Deno.readTextFileSync(PASSWD));
  } catch {
    return [];
  }
}

/** The entry for `uid`, or null (the first match, as getpwuid returns). */
export function userByUid(uid: number): PasswdEntry | null {
  return readPasswd().find((e) => e.uid === uid) ?? null;
}

/** The login name and full name for `uid`; "uid<N>" when it has no entry, so mail still has an owner. */
export function loginOf(uid: number): { name: string; fullName: string } {
  const e = userByUid(uid);
  return e ? { name: e.name, fullName: e.fullName } : { name: `uid${uid}`, fullName: "" };
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

/** A group's gid from /etc/group by name, or a number as written; null when unknown. */
export function lookupGroup(name: string): number | null {
  if (/^[0-9]{1,10}$/.test(name)) return Number(name);
  let text = "";
  try {
    text = Deno.readTextFileSync("/etc/group");
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length >= 3 && f[0] === name && /^[0-9]{1,10}$/.test(f[2])) return Number(f[2]);
  }
  return null;
}

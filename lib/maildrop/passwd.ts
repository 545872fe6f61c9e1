/**
 * Users from /etc/passwd: the identity behind a uid (the maildrop file's
 * owner, the shim's own uid) and its GECOS full name. Identity always comes
 * from the uid the kernel reports, never from $USER or $LOGNAME.
 */

/** One /etc/passwd entry. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  /** The full name: the GECOS field up to its first comma. */
  fullName: string;
  home: string;
}

/** Parses /etc/passwd text (pure; for tests). */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || line.startsWith("#")) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0], uid, gid, fullName: f[4].split(",")[0].trim(), home: f[5] });
  }
  return out;
}

/** The entry for `uid`, or null (the first match, as getpwuid returns). */
export async function lookupUid(uid: number, file = "/etc/passwd"): Promise<PasswdEntry | null> {
  try {
    return parsePasswd(await Deno.readTextFile(file)).find((e) => e.uid === uid) ?? null;
  } catch {
    return null;
  }
}

/** The login name for `uid`: its passwd name, else "uid<N>" so mail still has an owner. */
export async function loginOf(uid: number): Promise<{ name: string; fullName: string }> {
  const e = await lookupUid(uid);
  return e ? { name: e.name, fullName: e.fullName } : { name: `uid${uid}`, fullName: "" };
}

/**
 * The `owner` of a unix socket listener: "user" or "user:group", names
 * resolved from /etc/passwd and /etc/group (Deno has no getpwnam(3) or
 * getgrnam(3); NSS sources such as LDAP are not consulted, so numeric ids
 * are accepted too). Resolved when the config is read, so an unknown name
 * is a config error rather than a failure at bind time.
 */
import { readPasswd } from "../sys/passwd.ts";

/** A resolved socket owner; gid null keeps the socket's group. */
export interface SocketOwner {
  /** As written in the config, e.g. "mail:mail". */
  text: string;
  uid: number;
  gid: number | null;
}

/** The group file read through; a test may point it elsewhere. */
let groupPath = "/etc/group";

/** Points group lookups at another file (tests). */
export function setGroupPath(path: string): void {
  groupPath = path;
}

/** The gid of a group name from group(5) text; null when absent. */
export function groupId(name: string, text: string): number | null {
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 3 || f[0] !== name || !/^[0-9]{1,10}$/.test(f[2])) continue;
    return Number(f[2]);
  }
  return null;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/;
const ID = /^[0-9]{1,10}$/;

/**
 * Resolves "user" or "user:group" (names or numeric ids); returns an
 * explanation string instead when it cannot.
 */
export function resolveOwner(text: string): SocketOwner | string {
  const [user, group, ...rest] = text.split(":");
  if (rest.length > 0 || user === "" || group === "") return "malformed";
  if (!ID.test(user) && !NAME.test(user)) return `bad user name "${user}"`;
  let uid: number;
  if (ID.test(user)) uid = Number(user);
  else {
    const entry = readPasswd().find((e) => e.name === user);
    if (!entry) return `no user "${user}" in /etc/passwd`;
    uid = entry.uid;
  }
  let gid: number | null = null;
  if (group !== undefined) {
    if (ID.test(group)) gid = Number(group);
    else if (!NAME.test(group)) return `bad group name "${group}"`;
    else {
      let groups = "";
      try {
        groups = Deno.readTextFileSync(groupPath);
      } catch { /* unreadable: every name is unknown */ }
      gid = groupId(group, groups);
      if (gid === null) return `no group "${group}" in ${groupPath}`;
    }
  }
  return { text, uid, gid };
}

/**
 * Who may set which envelope sender on local submission: root and the
 * users in `auth.trusted_users` any, everyone else only their own
 * login@hostname (or the null sender, which names nobody). The shim asks
 * this before submitting and the pickup asks it again from the file's owner.
 */
import type { Config } from "../config/types.ts";

/** True when `login` (uid) may use `sender` as envelope sender. */
export function senderAllowed(
  cfg: Config,
  who: { login: string; uid: number; sender: string },
): boolean {
  if (who.uid === 0 || cfg.auth.trustedUsers.includes(who.login)) return true;
  if (who.sender === "") return true;
  return who.sender.toLowerCase() === `${who.login}@${cfg.hostname}`.toLowerCase();
}

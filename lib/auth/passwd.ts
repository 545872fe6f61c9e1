/**
 * `skiff passwd USER`: reads a password from the first line of stdin and
 * prints a credentials-file line `USER:scrypt$...` for [auth] credentials.
 * The password never appears in argv (visible in ps) or in the output.
 */
import { hashPassword } from "./credentials.ts";

/** Runs the sub-command; returns the exit code. */
export async function passwd(args: string[]): Promise<number> {
  const [user, extra] = args;
  if (!user || extra !== undefined || !/^[\x21-\x39\x3b-\x7e]{1,255}$/.test(user)) {
    console.error("usage: skiff passwd USER   (password on the first line of stdin)");
    return 64;
  }
  const text = await new Response(Deno.stdin.readable).text();
  const password = text.split("\n")[0].replace(/\r$/, "");
  if (password === "") {
    console.error("skiff passwd: empty password on stdin");
    return 64;
  }
  console.log(`${user}:${await hashPassword(password)}`);
  return 0;
}

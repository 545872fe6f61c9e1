/**
 * Tests that need a real peer from Debian (swaks, postfix, dovecot, ...)
 * register through peerTest. Where the peer's program is missing, the test
 * is reported as ignored with a line naming the package to install; under CI
 * (CI=true) it runs anyway and fails, since .ci/run installs every peer.
 */

/** A program a test needs, and the Debian package that provides it. */
export interface Peer {
  bin: string;
  pkg: string;
}

/** True when the file exists and is executable by someone. */
export function havePeer(bin: string): boolean {
  try {
    const st = Deno.statSync(bin);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Registers a Deno test that needs the given peers. */
export function peerTest(
  name: string,
  needs: Peer[],
  fn: (t: Deno.TestContext) => Promise<void>,
): void {
  const missing = needs.filter((p) => !havePeer(p.bin));
  const inCi = Deno.env.get("CI") === "true";
  if (missing.length > 0 && !inCi) {
    for (const p of missing) {
      console.error(
        `peer missing: ${p.bin} — install the Debian package "${p.pkg}" to run "${name}"`,
      );
    }
  }
  Deno.test({
    name,
    ignore: missing.length > 0 && !inCi,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (t) => {
      if (missing.length > 0) {
        throw new Error(
          `Peer missing in CI: ${missing.map((p) => `${p.bin} (${p.pkg})`).join(", ")}`,
        );
      }
      await fn(t);
    },
  });
}

/** Common peers. */
export const PEERS = {
  swaks: { bin: "/usr/bin/swaks", pkg: "swaks" },
  smtpSink: { bin: "/usr/sbin/smtp-sink", pkg: "postfix" },
  smtpSource: { bin: "/usr/sbin/smtp-source", pkg: "postfix" },
} as const satisfies Record<string, Peer>;

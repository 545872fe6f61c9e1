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
  /** A data file (such as a Python module) that need not be executable. */
  data?: boolean;
}

/** True when the file exists and is executable by someone. */
export function havePeer(bin: string, data = false): boolean {
  try {
    const st = Deno.statSync(bin);
    return st.isFile && (data || ((st.mode ?? 0) & 0o111) !== 0);
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
  const missing = needs.filter((p) => !havePeer(p.bin, p.data));
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
  postfix: { bin: "/usr/sbin/postfix", pkg: "postfix" },
  openssl: { bin: "/usr/bin/openssl", pkg: "openssl" },
  python3: { bin: "/usr/bin/python3", pkg: "python3" },
  aiosmtpd: {
    bin: "/usr/lib/python3/dist-packages/aiosmtpd/__main__.py",
    pkg: "python3-aiosmtpd",
    data: true,
  },
  dovecotLmtp: { bin: "/usr/lib/dovecot/lmtp", pkg: "dovecot-lmtpd" },
  dnsmasq: { bin: "/usr/sbin/dnsmasq", pkg: "dnsmasq-base" },
  msmtp: { bin: "/usr/bin/msmtp", pkg: "msmtp" },
  mailx: { bin: "/usr/bin/bsd-mailx", pkg: "bsd-mailx" },
  setpriv: { bin: "/usr/bin/setpriv", pkg: "util-linux" },
  rspamd: { bin: "/usr/bin/rspamd", pkg: "rspamd" },
} as const satisfies Record<string, Peer>;

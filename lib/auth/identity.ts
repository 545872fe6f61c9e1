/**
 * Who a client session is once it has authenticated: a SASL user or a
 * local peer known by its uid (peercred). Shared by the SMTP server, the
 * sender policy and the mail-authentication hook, so it lives below all of
 * them.
 */

/** Who the client is, when it proved it (RFC 4954 AUTH, or SO_PEERCRED). */
export interface Identity {
  kind: "sasl" | "peercred";
  /** The SASL user name, or the login name of the peer's uid ("uid<N>" without one). */
  name: string;
  /** peercred only: the kernel's credentials. */
  uid?: number;
  gid?: number;
  pid?: number;
  /** May use any sender address (root, trusted_users). */
  trusted: boolean;
}

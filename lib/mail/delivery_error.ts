/**
 * Delivery failures, each either temporary (retry later) or permanent
 * (bounce now), with the RFC 3463 enhanced status code that goes into the
 * DSN and the log. Temporary is the default: wrongly retrying costs a delay,
 * wrongly bouncing loses mail. (chasquid's courier `(err, permanent bool)`.)
 */

/** A failed delivery to one recipient. */
export class DeliveryError extends Error {
  /** True only when retrying cannot help; the queue then bounces instead of deferring. */
  readonly permanent: boolean;
  /** RFC 3463 enhanced status code, "4.x.x" when temporary, "5.x.x" when permanent. */
  readonly dsn: string;

  /**
   * `opts.permanent` defaults to false; `opts.dsn` to "4.0.0" or "5.0.0" to
   * match. A dsn whose class disagrees with `permanent` is corrected to it.
   */
  constructor(
    message: string,
    opts: { permanent?: boolean; dsn?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "DeliveryError";
    this.permanent = opts.permanent ?? false;
    const cls = this.permanent ? "5" : "4";
    const dsn = opts.dsn && /^[245]\.\d{1,3}\.\d{1,3}$/.test(opts.dsn) ? opts.dsn : `${cls}.0.0`;
    this.dsn = `${cls}${dsn.slice(1)}`;
  }
}

/**
 * Classifies a file-system error met while delivering into a DeliveryError.
 * All are temporary, because each is something an operator can fix before
 * the message expires:
 *  - EDQUOT: the recipient's quota, 4.2.2 (mailbox full);
 *  - ENOSPC: the disk, 4.3.1 (mail system full);
 *  - EACCES/EPERM: a mailbox skiff may not write, 4.2.0 (mailbox status),
 *    typically wrong ownership after a restore or a uid change;
 *  - anything else (EIO, EROFS, ...): 4.3.0 (mail system).
 * A DeliveryError passes through unchanged.
 */
export function fsDeliveryError(err: unknown, what: string): DeliveryError {
  if (err instanceof DeliveryError) return err;
  const code = (err as { code?: unknown })?.code;
  const text = err instanceof Error ? err.message : String(err);
  let dsn = "4.3.0";
  if (code === "EDQUOT") dsn = "4.2.2";
  else if (code === "ENOSPC") dsn = "4.3.1";
  else if (
    code === "EACCES" || code === "EPERM" || err instanceof Deno.errors.PermissionDenied
  ) dsn = "4.2.0";
  return new DeliveryError(`${what}: ${text}`, { dsn, cause: err });
}

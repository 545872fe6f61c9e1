/**
 * Each process drops the Deno permissions its work does not need
 * (STYLE item 11): a delivery child has no business with the network, a
 * sendmail shim none with subprocesses or FFI. Revocation cannot be undone,
 * so a bug later in the process cannot use what was dropped.
 */

/** A Deno permission that can be revoked as a whole. */
export type PermissionName = "net" | "run" | "ffi" | "sys" | "env" | "read" | "write";

/** Revokes each named permission for the rest of this process. */
export async function dropPermissions(names: readonly PermissionName[]): Promise<void> {
  for (const name of names) await Deno.permissions.revoke({ name });
}

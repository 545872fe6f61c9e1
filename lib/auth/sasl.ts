/**
 * SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) decoding.
 * Only the parsing lives here; the SMTP exchange is in the session and the
 * password check in credentials.ts.
 */

/** A decoded user name and password; null when the response is malformed. */
export interface SaslLogin {
  user: string;
  password: string;
}

/** Base64 to UTF-8 text; null when not valid base64 or not UTF-8. */
export function decodeBase64Text(s: string): string | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  try {
    const bytes = Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/** UTF-8 text to base64. */
export function encodeBase64Text(s: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s)));
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * RFC 4616 §2: `[authzid] NUL authcid NUL passwd`. An authzid other than
 * empty or the authcid itself is refused: skiff has no proxy authorisation.
 */
export function decodePlain(b64: string): SaslLogin | null {
  const text = decodeBase64Text(b64);
  if (text === null) return null;
  const parts = text.split("\0");
  if (parts.length !== 3) return null;
  const [authz, user, password] = parts;
  if (user === "" || password === "" || (authz !== "" && authz !== user)) return null;
  if (CONTROL.test(user) || user.length > 255 || password.length > 1024) return null;
  return { user, password };
}

/** A LOGIN user name or password response. */
export function decodeLoginField(b64: string): string | null {
  const text = decodeBase64Text(b64);
  if (text === null || text === "" || text.length > 1024 || text.includes("\0")) return null;
  return text;
}

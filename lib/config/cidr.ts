/**
 * IP networks in CIDR notation, for `relay_networks`: the server asks
 * `inNetworks(clientIp, config.relayNetworks)` before letting an
 * unauthenticated client relay. Parsing is strict (dotted-quad IPv4 without
 * leading zeros, RFC 4291 §2.2 IPv6 text forms) because a lenient parser in an
 * access check is how open relays happen. IPv4-mapped IPv6 addresses
 * ("::ffff:127.0.0.1", what a dual-stack socket reports for an IPv4 client)
 * are compared as the IPv4 address they carry.
 */

/** A parsed network: address family, network address bytes (4 or 16) and prefix length. */
export interface Cidr {
  family: 4 | 6;
  /** The network address; host bits are zero. */
  bytes: Uint8Array;
  prefix: number;
}

/**
 * Parses a dotted-quad IPv4 address into 4 bytes, or returns null.
 * Leading zeros are refused: "010.0.0.1" means 8.0.0.1 to some parsers.
 */
export function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Parses an IPv6 address (RFC 4291 §2.2, including a trailing dotted quad) into 16 bytes, or returns null. */
export function parseIPv6(s: string): Uint8Array | null {
  if (s.length === 0 || s.length > 45) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (text: string): number[] | null => {
    if (text === "") return [];
    const out: number[] = [];
    const parts = text.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  // A dotted quad may only end the address.
  if (halves.length === 2 && halves[0].includes(".")) return null;
  let all: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return null;
    all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    if (head.length !== 8) return null;
    all = head;
  }
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

const MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function isMapped(b: Uint8Array): boolean {
  return MAPPED_PREFIX.every((v, i) => b[i] === v);
}

/**
 * Parses an IP address (IPv4 or IPv6; an IPv6 zone such as "%eth0" is
 * ignored) into its family and bytes. IPv4-mapped IPv6 becomes IPv4.
 * Returns null for anything else.
 */
export function parseIp(s: string): { family: 4 | 6; bytes: Uint8Array } | null {
  const v4 = parseIPv4(s);
  if (v4) return { family: 4, bytes: v4 };
  const zone = s.indexOf("%");
  const v6 = parseIPv6(zone >= 0 ? s.slice(0, zone) : s);
  if (!v6) return null;
  if (isMapped(v6)) return { family: 4, bytes: v6.slice(12) };
  return { family: 6, bytes: v6 };
}

/**
 * Parses a network in CIDR notation ("10.0.0.0/8", "2001:db8::/32"). A bare
 * address is a single host (/32 or /128). A network inside ::ffff:0:0/96 is
 * taken as the IPv4 network it maps. Throws a RangeError saying what is wrong,
 * including host bits set below the prefix ("10.1.2.3/8"), which usually means
 * a typo and would otherwise widen or narrow the network silently.
 */
export function parseCidr(s: string): Cidr {
  const slash = s.indexOf("/");
  const addrText = slash >= 0 ? s.slice(0, slash) : s;
  const v4 = parseIPv4(addrText);
  const v6 = v4 ? null : parseIPv6(addrText);
  if (!v4 && !v6) throw new RangeError(`Not an IP address: "${addrText}"`);
  const width = v4 ? 32 : 128;
  let prefix = width;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > width) {
      throw new RangeError(`Prefix length must be 0-${width}, not "${p}"`);
    }
    prefix = Number(p);
  }
  let bytes = (v4 ?? v6)!;
  let family: 4 | 6 = v4 ? 4 : 6;
  for (let bit = prefix; bit < width; bit++) {
    if (bytes[bit >> 3] & (0x80 >> (bit & 7))) {
      throw new RangeError(`Host bits are set below the /${prefix} prefix`);
    }
  }
  if (family === 6 && prefix >= 96 && isMapped(bytes)) {
    family = 4;
    bytes = bytes.slice(12);
    prefix -= 96;
  }
  return { family, bytes, prefix };
}

/** Whether a parsed address lies inside a parsed network. */
export function cidrContains(net: Cidr, ip: { family: 4 | 6; bytes: Uint8Array }): boolean {
  if (net.family !== ip.family) return false;
  const full = net.prefix >> 3;
  for (let i = 0; i < full; i++) if (net.bytes[i] !== ip.bytes[i]) return false;
  const rest = net.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (net.bytes[full] & mask) === (ip.bytes[full] & mask);
}

const cache = new Map<string, Cidr>();

/**
 * Whether `ip` (as a socket reports it: IPv4, IPv6, IPv4-mapped IPv6, maybe
 * with a zone) lies in any of `nets` (CIDR strings, as validated by the
 * config loader). An address that does not parse is in no network: a relay
 * decision must never be granted by accident. An invalid network throws.
 */
export function inNetworks(ip: string, nets: string[]): boolean {
  const addr = parseIp(ip);
  if (!addr) return false;
  for (const n of nets) {
    let net = cache.get(n);
    if (!net) {
      net = parseCidr(n);
      if (cache.size > 1024) cache.clear();
      cache.set(n, net);
    }
    if (cidrContains(net, addr)) return true;
  }
  return false;
}

/** Formats a parsed network back as text ("10.0.0.0/8", "2001:db8::/32"). */
export function formatCidr(c: Cidr): string {
  if (c.family === 4) return `${c.bytes.join(".")}/${c.prefix}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((c.bytes[i] << 8) | c.bytes[i + 1]);
  // RFC 5952 §4.2: compress the longest run (of two or more) of zero groups.
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  const text = best < 0
    ? hex.join(":")
    : `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
  return `${text}/${c.prefix}`;
}

/**
 * Reading /proc through libc. Deno refuses /proc/<pid>/... (and /proc/self)
 * to anything short of --allow-all, which skiff never grants itself, but the
 * privilege check after setuid must read this process's own status files,
 * per thread. With the FFI permission skiff already holds (peer credentials)
 * open(2)/read(2) and opendir(3)/readdir(3) do it; only paths under /proc are accepted.
 */

type Libc = Deno.DynamicLibrary<{
  open: { parameters: ["buffer", "i32"]; result: "i32" };
  read: { parameters: ["i32", "buffer", "usize"]; result: "isize" };
  close: { parameters: ["i32"]; result: "i32" };
  opendir: { parameters: ["buffer"]; result: "pointer" };
  readdir: { parameters: ["pointer"]; result: "pointer" };
  closedir: { parameters: ["pointer"]; result: "i32" };
}>;

const O_RDONLY_CLOEXEC = 0o2000000;

function openLibc(): Libc {
  return Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
    opendir: { parameters: ["buffer"], result: "pointer" },
    readdir: { parameters: ["pointer"], result: "pointer" },
    closedir: { parameters: ["pointer"], result: "i32" },
  });
}

function cPath(path: string): Uint8Array {
  if (!path.startsWith("/proc/") || path.includes("\0") || path.includes("..")) {
    throw new Error(`Not a /proc path: ${path}`);
  }
  return new TextEncoder().encode(path + "\0");
}

/** Reads a small /proc file (at most 64 KiB); throws Deno.errors.NotFound when it cannot be opened. */
export function readProcFile(path: string): string {
  const libc = openLibc();
  try {
    const fd = libc.symbols.open(cPath(path), O_RDONLY_CLOEXEC);
    if (fd < 0) throw new Deno.errors.NotFound(`Cannot open ${path}`);
    try {
      const buf = new Uint8Array(64 * 1024);
      let n = 0;
      while (n < buf.length) {
        const got = Number(libc.symbols.read(fd, buf.subarray(n), BigInt(buf.length - n)));
        if (got <= 0) break;
        n += got;
      }
      return new TextDecoder().decode(buf.subarray(0, n));
    } finally {
      libc.symbols.close(fd);
    }
  } finally {
    libc.close();
  }
}

/** Names in a /proc directory (without "." and ".."). */
export function listProcDir(path: string): string[] {
  const libc = openLibc();
  try {
    const dir = libc.symbols.opendir(cPath(path));
    if (!dir) throw new Deno.errors.NotFound(`Cannot open ${path}`);
    const names: string[] = [];
    try {
      while (true) {
        const ent = libc.symbols.readdir(dir);
        if (!ent) break;
        // struct dirent (glibc, 64-bit): d_ino 8, d_off 8, d_reclen 2, d_type 1, d_name.
        const name = new Deno.UnsafePointerView(ent).getCString(19);
        if (name !== "." && name !== "..") names.push(name);
      }
    } finally {
      libc.symbols.closedir(dir);
    }
    return names;
  } finally {
    libc.close();
  }
}

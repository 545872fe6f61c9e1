#!/usr/bin/env bash
# Installs skiff as the system's MTA (docs/install.md):
#   - the `skiff` system user and group;
#   - /var/spool/skiff (0700 skiff), /var/spool/skiff-maildrop (1733 skiff), /run/skiff (0755 skiff);
#   - /etc/skiff/skiff.toml from conf/skiff.production.toml (an existing file is never overwritten);
#   - /usr/local/sbin/skiff: the compiled binary (dist/skiff or --binary FILE) or, without one, a
#     launcher that runs the pinned Deno on a copy of the code in /usr/local/lib/skiff, with a
#     module cache every uid can read (workers run as the recipients' uids);
#   - /usr/sbin/sendmail, /usr/bin/mailq, /usr/bin/newaliases pointing at it, the files that were
#     there kept as NAME.skiff-saved (restored by --uninstall);
#   - the systemd unit (conf/skiff.service) and a cron line for `skiff flush`.
# DESTDIR installs into a staging tree for packagers and tests; the user is still created on this
# host (as a package's postinst would) unless --no-user is given, and files are owned by it.
#
# Usage: scripts/install.sh [--binary FILE] [--no-user] [--uninstall]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${DESTDIR:-}
binary=""
create_user=1
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --no-user) create_user=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it creates a system user and installs into system paths)" >&2
  exit 77
fi

SBIN=/usr/local/sbin/skiff
LIBDIR=/usr/local/lib/skiff
LINKS=(/usr/sbin/sendmail /usr/bin/mailq /usr/bin/newaliases)
SPOOL=/var/spool/skiff
MAILDROP=/var/spool/skiff-maildrop
RUNDIR=/run/skiff
CONF=/etc/skiff/skiff.toml
UNIT=/etc/systemd/system/skiff.service
CRON=/etc/cron.d/skiff
SAVED=.skiff-saved

say() { echo "install.sh: $*"; }

if [ "$uninstall" = 1 ]; then
  for l in "${LINKS[@]}"; do
    if [ -L "$dest$l" ] && [ "$(readlink "$dest$l")" = "$SBIN" ]; then rm -f "$dest$l"; fi
    if [ -e "$dest$l$SAVED" ] || [ -L "$dest$l$SAVED" ]; then
      mv -f "$dest$l$SAVED" "$dest$l"
      say "restored $l"
    fi
  done
  rm -f "$dest$SBIN" "$dest$UNIT" "$dest$CRON"
  rm -rf "$dest$LIBDIR"
  say "removed the binary, unit and cron line; kept $CONF, $SPOOL and $MAILDROP (mail may be queued)"
  exit 0
fi

# The system user: no login shell, home is the spool.
if [ "$create_user" = 1 ] && ! getent passwd skiff >/dev/null; then
  getent group skiff >/dev/null || groupadd --system skiff
  useradd --system --gid skiff --home-dir "$SPOOL" --no-create-home \
    --shell /usr/sbin/nologin --comment "skiff mail transfer agent" skiff
  say "created the system user skiff"
fi
owner=root:root
if getent passwd skiff >/dev/null; then owner=skiff:skiff; fi

install -d -m 0755 "$dest/etc/skiff" "$dest/usr/local/sbin" "$dest/usr/sbin" "$dest/usr/bin" \
  "$dest/etc/systemd/system" "$dest/etc/cron.d" "$dest/var/spool"
install -d -m 0700 -o "${owner%%:*}" -g "${owner##*:}" "$dest$SPOOL"
install -d -m 1733 -o "${owner%%:*}" -g "${owner##*:}" "$dest$MAILDROP"
install -d -m 0755 -o "${owner%%:*}" -g "${owner##*:}" "$dest$RUNDIR"

if [ -e "$dest$CONF" ]; then
  say "kept the existing $CONF"
else
  install -m 0644 "$here/conf/skiff.production.toml" "$dest$CONF"
  say "wrote $CONF (edit hostname and local.domains)"
fi

if [ -z "$binary" ] && [ -x "$here/dist/skiff" ]; then binary="$here/dist/skiff"; fi
if [ -n "$binary" ]; then
  install -m 0755 "$binary" "$dest$SBIN"
  say "installed the compiled binary $binary as $SBIN"
else
  # No compiled binary (deno compile needs Deno's runtime, denort): run the pinned Deno on an
  # installed copy of the code. Everything is root-owned and readable by all, because workers
  # start as the recipients' uids and must load the same code.
  deno=$("$here/scripts/deno" eval --quiet 'console.log(Deno.execPath())')
  rm -rf "$dest$LIBDIR"
  install -d -m 0755 "$dest$LIBDIR" "$dest$LIBDIR/bin"
  cp -r "$here/main.ts" "$here/lib" "$here/deno.json" "$here/deno.lock" "$dest$LIBDIR/"
  install -m 0755 "$deno" "$dest$LIBDIR/bin/deno"
  # The module cache: the npm packages this checkout already has (an offline host needs no
  # registry), then whatever is still missing for the installed copy.
  src_cache=$("$here/scripts/deno" info --json | sed -n 's/.*"denoDir": *"\([^"]*\)".*/\1/p')
  if [ -d "$src_cache/npm" ]; then
    install -d -m 0755 "$dest$LIBDIR/deno-dir"
    cp -r "$src_cache/npm" "$dest$LIBDIR/deno-dir/npm"
  fi
  DENO_DIR="$dest$LIBDIR/deno-dir" DENO_NO_UPDATE_CHECK=1 \
    "$dest$LIBDIR/bin/deno" cache --quiet --config "$dest$LIBDIR/deno.json" "$dest$LIBDIR/main.ts"
  chmod -R a+rX "$dest$LIBDIR"
  cat >"$dest$SBIN" <<EOF
#!/bin/bash
# skiff launcher (scripts/install.sh): the pinned Deno on the installed code. The name this was
# started by (sendmail, mailq, newaliases) is passed on as argv[0], which decides the command.
export DENO_DIR=$LIBDIR/deno-dir DENO_NO_UPDATE_CHECK=1
exec -a "\$(basename "\$0")" $LIBDIR/bin/deno run --quiet --no-prompt --cached-only \\
  --config $LIBDIR/deno.json --allow-read --allow-write --allow-net --allow-env --allow-run \\
  --allow-sys --allow-ffi --v8-flags=--optimize-for-size $LIBDIR/main.ts "\$@"
EOF
  chmod 0755 "$dest$SBIN"
  say "installed a launcher for the pinned Deno as $SBIN (code in $LIBDIR)"
fi

for l in "${LINKS[@]}"; do
  if [ -L "$dest$l" ] && [ "$(readlink "$dest$l")" = "$SBIN" ]; then continue; fi
  if [ -e "$dest$l" ] || [ -L "$dest$l" ]; then
    if [ -e "$dest$l$SAVED" ] || [ -L "$dest$l$SAVED" ]; then
      echo "install.sh: $l$SAVED exists already; not overwriting it" >&2
      exit 73
    fi
    mv "$dest$l" "$dest$l$SAVED"
    say "saved $l as $l$SAVED"
  fi
  ln -s "$SBIN" "$dest$l"
done

install -m 0644 "$here/conf/skiff.service" "$dest$UNIT"
cat >"$dest$CRON" <<EOF
# skiff: retry the queue every 10 minutes even if the manager is down (skiff flush tells a
# running manager, or runs one queue pass itself; exit 75 means mail is still waiting).
*/10 * * * * root $SBIN --config $CONF flush >/dev/null 2>&1 || true
EOF
chmod 0644 "$dest$CRON"
say "done: start it with 'systemctl enable --now skiff' (or '$SBIN --config $CONF serve')"

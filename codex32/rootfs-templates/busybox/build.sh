#!/bin/sh
# Build the busybox template into $1 (an empty directory).
# Needs Debian's busybox-static (setup.sh installs it).
set -eu
dest=$1
bb=/bin/busybox
if [ ! -x "$bb" ] || ! "$bb" true; then
    echo "busybox template: $bb is missing; apt-get install busybox-static" >&2
    exit 1
fi
if ldd "$bb" >/dev/null 2>&1; then
    echo "busybox template: $bb is dynamically linked; apt-get install busybox-static" >&2
    exit 1
fi
echo "  [1/3] laying out directories"
for d in bin sbin usr/bin usr/sbin etc dev proc sys tmp root home run var/tmp var/log; do
    mkdir -p "$dest/$d"
done
chmod 1777 "$dest/tmp" "$dest/var/tmp"
chmod 700 "$dest/root"
echo "  [2/3] installing busybox and its applets"
cp "$bb" "$dest/bin/busybox"
for applet in $("$bb" --list-full); do
    [ "$applet" = "bin/busybox" ] && continue
    mkdir -p "$dest/$(dirname "$applet")"
    ln -sf /bin/busybox "$dest/$applet"
done
echo "  [3/3] writing /etc"
cat > "$dest/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
bot:x:1000:1000:bot:/home/bot:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > "$dest/etc/group" <<'GR'
root:x:0:
bot:x:1000:
nogroup:x:65534:
GR
mkdir -p "$dest/home/bot" && chown 1000:1000 "$dest/home/bot"
echo "127.0.0.1 localhost" > "$dest/etc/hosts"
: > "$dest/etc/resolv.conf"
echo "busybox" > "$dest/etc/hostname"

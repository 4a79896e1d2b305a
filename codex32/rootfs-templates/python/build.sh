#!/bin/sh
# Build the python template's skeleton into $1: the runtime itself (/usr) is the
# host's, bound read-only at start (template.toml), so nothing big is copied.
set -eu
dest=$1
if [ ! -x /usr/bin/python3 ]; then
    echo "python template: /usr/bin/python3 is missing; apt-get install python3" >&2
    exit 1
fi
echo "  [1/2] laying out directories (merged /usr)"
for d in usr etc/ssl/certs dev proc sys tmp root home/bot run var/tmp; do
    mkdir -p "$dest/$d"
done
for link in bin lib lib64 sbin; do
    [ -e "/usr/$link" ] && ln -sfn "usr/$link" "$dest/$link"
done
chmod 1777 "$dest/tmp" "$dest/var/tmp"
chmod 700 "$dest/root"
touch "$dest/etc/ld.so.cache" "$dest/etc/localtime"
echo "  [2/2] writing /etc"
cat > "$dest/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
bot:x:1000:1000:bot:/home/bot:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PW
cat > "$dest/etc/group" <<'GR'
root:x:0:
bot:x:1000:
nogroup:x:65534:
GR
chown 1000:1000 "$dest/home/bot"
echo "127.0.0.1 localhost" > "$dest/etc/hosts"
: > "$dest/etc/resolv.conf"
echo "python" > "$dest/etc/hostname"

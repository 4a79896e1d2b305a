#!/bin/sh
# Build a Debian 12 minbase tree into $1 (an empty directory) from Debian's packages.
# Needs mmdebstrap (setup.sh installs it); debootstrap is the fallback. The mirror is
# $CODEX32_DEBIAN_MIRROR, else the host's own (apt's sources), else deb.debian.org.
set -eu
dest=$1
suite=${CODEX32_DEBIAN_SUITE:-bookworm}
mirror=${CODEX32_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources \
             2>/dev/null | head -n1)
fi
mirror=${mirror:-http://deb.debian.org/debian}
echo "  [1/2] bootstrapping Debian $suite (minbase) from $mirror"
if command -v mmdebstrap >/dev/null 2>&1; then
    mmdebstrap --variant=minbase --mode=root --format=directory \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$suite" "$dest" "$mirror" 2>&1  # its I: lines are the progress
elif command -v debootstrap >/dev/null 2>&1; then
    debootstrap --variant=minbase "$suite" "$dest" "$mirror" 2>&1
else
    echo "debian template: neither mmdebstrap nor debootstrap is installed; apt-get install mmdebstrap" >&2
    exit 1
fi
echo "  [2/2] tidying: device nodes (a container's /dev is its own), apt lists and caches"
find "$dest/dev" -mindepth 1 -delete
rm -rf "$dest"/var/lib/apt/lists/* "$dest"/var/cache/apt/*.bin "$dest"/var/cache/apt/archives/*.deb
: > "$dest/etc/resolv.conf"
echo "debian" > "$dest/etc/hostname"

#!/bin/sh
# Run a command where crun 1.8 accepts this hybrid cgroup host.
#
# Usage: unshare --mount --cgroup --propagation private -- bench/cgroupns.sh CMD [ARGS...]
#
# crun 1.8 refuses hybrid hosts ("cgroups in hybrid mode not supported"). Inside a
# private mount namespace and a new cgroup namespace, this puts a fresh tmpfs on
# /sys/fs/cgroup and mounts again only the v1 hierarchies this process is in (from
# /proc/self/cgroup), not the v2 tree: crun then sees a plain v1 host. The cgroup
# namespace makes this process's own cgroups the roots of those mounts, so a relative
# cgroupsPath lands beneath the caller's cgroups on the host. Nothing here is visible
# outside the namespace; it all goes away with its last process.
set -eu
[ "$#" -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
mount -t tmpfs -o mode=0755,nosuid,nodev,noexec cgroup_root /sys/fs/cgroup
while IFS=: read -r _id controllers _path; do
    [ -n "$controllers" ] || continue          # the v2 line ("0::/") is left out
    case "$controllers" in
        name=*) dir=${controllers#name=}; opts="none,$controllers" ;;
        *) dir=$controllers; opts=$controllers ;;
    esac
    mkdir -p "/sys/fs/cgroup/$dir"
    mount -t cgroup -o "$opts,nosuid,nodev,noexec" cgroup "/sys/fs/cgroup/$dir"
done < /proc/self/cgroup
exec "$@"

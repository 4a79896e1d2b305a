"""``python -S -m codex32._runtime.export``: a container's filesystem as a tar on stdout.

Runs in its own mount namespace (nothing is mounted on the host): it mounts a
read-only overlay of the container's upper layer over its template (both as lower
layers, so whiteouts and opaque directories are honoured, and a running
container's own overlay is not disturbed), then streams the tree with tarfile.
Ids of a user-namespaced container are shifted back, so root's files are uid 0 in
the archive, as ``docker export`` gives them.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile

from codex32._linux import mounts, syscalls


def main() -> int:
    spec = json.loads(sys.argv[1])
    syscalls.unshare(syscalls.CLONE_NEWNS)
    mounts.make_private()
    shift = int(spec["id_shift"])
    with tempfile.TemporaryDirectory(prefix="codex32-export-") as target:
        if spec.get("lower_base"):
            os.chdir(spec["lower_base"])  # the layers are named relative to it
        options = "lowerdir=" + ":".join([spec["upper"], *spec["lower"]])
        if spec["userxattr"]:
            options += ",userxattr"
        syscalls.mount("overlay", target, "overlay", syscalls.MS_RDONLY, options)

        def unshift(info: tarfile.TarInfo) -> tarfile.TarInfo:
            if shift:
                info.uid = info.uid - shift if info.uid >= shift else info.uid
                info.gid = info.gid - shift if info.gid >= shift else info.gid
                info.uname = info.gname = ""
            return info

        try:
            with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as archive:
                for entry in sorted(os.listdir(target)):
                    archive.add(os.path.join(target, entry), arcname=entry, filter=unshift)
        finally:
            syscalls.umount2(target, syscalls.MNT_DETACH)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Set up a Debian 12 host (as root) for Codex-32: system packages, the virtualenv,
# and the project installed into it. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"

# busybox-static: the busybox template; tini: the --init reaper (tini-static);
# libcap-dev + python3-dev + gcc: for Python packages that build C extensions;
# libseccomp2: the seccomp profiles (loaded through pyseccomp); iproute2: tests look at links;
# nftables: masquerade for networks created with --masquerade; crun, runc, bubblewrap,
# podman (+ its conmon, uidmap) and docker.io: the anchors `make bench` compares against
# (hyperfine: the CLI comparison docs/performance.md quotes);
# qemu-system-x86 + linux-image-amd64 (a stock kernel in /boot; the running kernel is not
# changed): the cgroup v2 tests boot it with virtme-ng, since this host's controllers are v1.
PACKAGES=(busybox-static tini libcap-dev libseccomp2 python3 python3-venv python3-dev gcc
          iproute2 util-linux procps nftables qemu-system-x86 linux-image-amd64
          crun runc bubblewrap podman conmon uidmap docker.io hyperfine)
# Extra packages named by the caller (e.g. the cgroup v2 VM tools), space separated.
read -r -a EXTRA <<< "${CODEX32_EXTRA_PACKAGES:-}"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages and the engine needs root)" >&2
    exit 1
fi

# One line per step; a step's full output goes to a log, shown (its path and tail)
# only when the step fails.
log=$(mktemp "${TMPDIR:-/tmp}/codex32-setup.XXXXXX")
step() {  # step "what it does" command [args...]
    local what=$1
    shift
    echo "==> $what"
    if ! "$@" >>"$log" 2>&1; then
        echo "setup.sh: failed: $what" >&2
        echo "setup.sh: full output in $log; its last lines:" >&2
        tail -n 25 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
}

missing=()
for p in "${PACKAGES[@]}" "${EXTRA[@]}"; do
    [ -n "$p" ] || continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt_install() {
        # Another apt run on the machine (a second checkout's set-up) is waited for.
        apt-get -o DPkg::Lock::Timeout=900 update -q &&
            apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "$@"
    }
    step "installing Debian packages: ${missing[*]}" apt_install "${missing[@]}"
fi

# Debian's interpreter, not a pyenv shim: it starts in ~10 ms, and every container
# start pays interpreter start-up once.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    step "creating .venv (with $PY)" "$PY" -m venv .venv
fi
stamp=.venv/.codex32-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    pip_install() {
        .venv/bin/pip install --disable-pip-version-check --upgrade pip setuptools wheel &&
            .venv/bin/pip install --disable-pip-version-check -e '.[dev]'
    }
    step "installing codex32 and its dependencies into .venv" pip_install
    touch "$stamp"
fi
# The group whose members may use the host service's sockets (0660 root:codex32).
getent group codex32 >/dev/null || groupadd --system codex32
# Byte-compile the package: every container start imports part of it in a fresh
# interpreter, and PYTHONDONTWRITEBYTECODE may be set in the environment.
.venv/bin/python -m compileall -q codex32 >>"$log" 2>&1
rm -f "$log"
echo "==> set-up done"

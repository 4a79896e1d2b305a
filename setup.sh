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
# postgresql: the executor's tests start a real server from its binaries (initdb, pg_ctl).
# Images: docker-registry (the tests' registry), skopeo and umoci (the tests make and copy
# images with them), apache2-utils (htpasswd for the registry's basic auth), mmdebstrap
# (`codex32 build debian`).
PACKAGES=(busybox-static tini libcap-dev libseccomp2 python3 python3-venv python3-dev gcc
          iproute2 util-linux procps nftables qemu-system-x86 linux-image-amd64
          crun runc bubblewrap postgresql
          docker-registry skopeo umoci apache2-utils mmdebstrap
          podman conmon uidmap hyperfine)
# docker.io: only its docker CLI, which the Docker-socket tests drive (no dockerd is run).
DOCKER_CLIENT=docker.io
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

# The docker CLI comes with Debian's docker.io, whose install would start a dockerd: keep
# it from starting (policy-rc.d) and from being socket-activated later.
install_docker_client() {
    local policy=/usr/sbin/policy-rc.d made_policy=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
            --no-install-recommends "$DOCKER_CLIENT" || status=$?
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
    if [ -d /run/systemd/system ]; then
        systemctl disable --now docker.socket docker.service || true
    fi
    return "$status"
}
if ! dpkg-query -W -f='${Status}' "$DOCKER_CLIENT" 2>/dev/null | grep -q "install ok installed"; then
    step "installing $DOCKER_CLIENT (its docker CLI only; dockerd is not started)" \
        install_docker_client
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

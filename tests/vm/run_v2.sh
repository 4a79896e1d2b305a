#!/usr/bin/env bash
# Boot a throw-away VM with a stock kernel (every cgroup v2 controller on) and run
# tests/integration/test_cgroups_v2.py inside it. Exit status: the tests' own.
#
# Needs: virtme-ng (PyPI, command vng, in the venv), qemu-system-x86 and a kernel
# image (Debian linux-image-amd64, /boot/vmlinuz-*). The VM sees the host
# filesystem read-only with a scratch /tmp, so nothing is written to the work tree.
#
#   tests/vm/run_v2.sh [extra pytest args]
# Environment: KERNEL=/boot/vmlinuz-...  VENV=path/to/venv  CODEX32_VM_KVM=1 (use KVM;
# off by default: nested KVM fails on the development hosts, TCG boots in ~35 s).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${VENV:-$repo/.venv}
kernel=${KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
if [[ -z "$kernel" || ! -r "$kernel" ]]; then
    echo "run_v2.sh: no kernel image in /boot (apt-get install linux-image-amd64)" >&2
    exit 2
fi
export PATH="$venv/bin:$PATH"  # vng runs virtme-run from PATH
for tool in vng qemu-system-x86_64; do
    command -v "$tool" >/dev/null || { echo "run_v2.sh: $tool not found" >&2; exit 2; }
done

kvm=(--disable-kvm)
if [[ "${CODEX32_VM_KVM:-0}" == 1 ]]; then kvm=(); fi

args=""
for arg in "$@"; do args+=" $(printf '%q' "$arg")"; done
inner="cd $(printf '%q' "$repo") && PYTHONDONTWRITEBYTECODE=1 CODEX32_REQUIRE_V2=1 \
$(printf '%q' "$venv/bin/python") -m pytest -q -p no:cacheprovider -s \
tests/integration/test_cgroups_v2.py$args"

exec vng "${kvm[@]}" --run "$kernel" --cpus 2 --memory 1G --exec "$inner"

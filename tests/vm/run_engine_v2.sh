#!/usr/bin/env bash
# Boot a throw-away VM with a stock kernel (cgroup v2, every controller on) and run
# the engine-level resource tests (real containers) against the v2 driver:
# tests/integration/test_resources.py, the short selection below (OOM, pids, pause,
# per-device I/O throttling on a loop device).
# Exit status: the tests' own.
#
# Same VM as tests/vm/run_v2.sh (virtme-ng, the host filesystem read-only), with a
# fresh tmpfs (beside /tmp) where the session's storage directory and templates are built.
# The default selection uses the python template only (one template build; under
# TCG about 1 min to boot and 3 min of tests); others may need busybox-static.
#
#   tests/vm/run_engine_v2.sh [extra pytest args]
# Environment: KERNEL=/boot/vmlinuz-...  VENV=path/to/venv  CODEX32_VM_KVM=1 (use KVM)
#   CODEX32_VM_TESTS="pytest -k expression" (default: the short selection)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${VENV:-$repo/.venv}
kernel=${KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
if [[ -z "$kernel" || ! -r "$kernel" ]]; then
    echo "run_engine_v2.sh: no kernel image in /boot (apt-get install linux-image-amd64)" >&2
    exit 2
fi
export PATH="$venv/bin:$PATH"  # vng runs virtme-run from PATH
for tool in vng qemu-system-x86_64; do
    command -v "$tool" >/dev/null || { echo "run_engine_v2.sh: $tool not found" >&2; exit 2; }
done

kvm=(--disable-kvm)
if [[ "${CODEX32_VM_KVM:-0}" == 1 ]]; then kvm=(); fi

selection=${CODEX32_VM_TESTS:-"oom_killed or holds_exactly_ten or pause_stops_progress or throttle_direct_io"}
args=""
for arg in "$@"; do args+=" $(printf '%q' "$arg")"; done
# The VM's /tmp is an overlayfs (virtme's writable layer over the host's /tmp), which
# overlayfs refuses as an upper layer: the containers' root filesystems need a tmpfs.
# It goes beside /tmp, not over it: the checkout itself may live under /tmp.
scratch=/run/codex32-vm-tmp
inner="mkdir -p $scratch && mount -t tmpfs -o mode=1777 tmpfs $scratch && cd $(printf '%q' "$repo") && \
TMPDIR=$scratch CODEX32_TEST_TMPDIR=$scratch PYTHONDONTWRITEBYTECODE=1 CODEX32_REQUIRE_V2=1 \
$(printf '%q' "$venv/bin/python") -m pytest -q -p no:cacheprovider -s \
tests/integration/test_resources.py -k $(printf '%q' "$selection")$args"

exec vng "${kvm[@]}" --run "$kernel" --cpus 2 --memory 1G --exec "$inner"

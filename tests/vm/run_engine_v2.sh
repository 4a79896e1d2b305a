#!/usr/bin/env bash
# Boot a throw-away VM with a stock kernel (cgroup v2, every controller on) and run
# the engine-level resource tests (real containers) against the v2 driver:
# tests/integration/test_resources.py, the short selection below (OOM, pids, pause,
# per-device I/O throttling on a loop device), and test_oom_live.py (OOM kills
# reported while the container runs: memory.events watched with POLLPRI), and the
# sandbox pool's comparison of a pooled and a fresh container (v2 cannot rename a
# cgroup, so there a pooled PID 1 is moved at the claim: the other branch of v1's),
# and PID 1 forked straight into its cgroup (clone3(CLONE_INTO_CGROUP)) but at STRICT.
# Exit status: the tests' own.
#
# Same VM as tests/vm/run_v2.sh (virtme-ng, the host filesystem read-only), with a
# fresh tmpfs (beside /tmp) where the session's storage directory and templates are built.
# The default selection uses the python template only (one template build; under
# TCG about 1 min to boot and 3 min of tests); others may need busybox-static.
#
#   tests/vm/run_engine_v2.sh [extra pytest args]
# Environment: see tests/vm/vm_common.sh, and
#   CODEX32_VM_TESTS="pytest -k expression" (default: the short selection)
set -euo pipefail
me=run_engine_v2.sh
# shellcheck source=tests/vm/vm_common.sh
source "$(dirname "$0")/vm_common.sh"

selection=${CODEX32_VM_TESTS:-"oom_killed or holds_exactly_ten or pause_stops_progress or throttle_direct_io or oom_live or blkio_weight or pooled_container_is or closing_the_engine or pid1_is_forked"}
# The VM's /tmp is an overlayfs (virtme's writable layer over the host's /tmp), which
# overlayfs refuses as an upper layer: the containers' root filesystems need a tmpfs.
# It goes beside /tmp, not over it: the checkout itself may live under /tmp.
scratch=/run/codex32-vm-tmp
inner="mkdir -p $scratch && mount -t tmpfs -o mode=1777 tmpfs $scratch && cd $(printf '%q' "$repo") && \
TMPDIR=$scratch CODEX32_TEST_TMPDIR=$scratch PYTHONDONTWRITEBYTECODE=1 CODEX32_REQUIRE_V2=1 \
timeout -s INT -k 30 $vm_test_timeout $(printf '%q' "$venv/bin/python") -m pytest -q -p no:cacheprovider -s \
tests/integration/test_resources.py tests/integration/test_oom_live.py \
tests/integration/test_sandbox_pool.py tests/integration/test_launch_cgroup.py \
-k $(printf '%q' "$selection")$(quote_args "$@")"

run_in_vm "$inner"

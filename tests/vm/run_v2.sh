#!/usr/bin/env bash
# Boot a throw-away VM with a stock kernel (every cgroup v2 controller on) and run
# tests/integration/test_cgroups_v2.py inside it. Exit status: the tests' own.
#
# Needs: virtme-ng (PyPI, command vng, in the venv), qemu-system-x86 and a kernel
# image (Debian linux-image-amd64, /boot/vmlinuz-*). The VM sees the host
# filesystem read-only with a scratch /tmp, so nothing is written to the work tree.
#
#   tests/vm/run_v2.sh [extra pytest args]
# Environment: see tests/vm/vm_common.sh.
set -euo pipefail
me=run_v2.sh
# shellcheck source=tests/vm/vm_common.sh
source "$(dirname "$0")/vm_common.sh"

inner="cd $(printf '%q' "$repo") && PYTHONDONTWRITEBYTECODE=1 CODEX32_REQUIRE_V2=1 \
timeout -s INT -k 30 $vm_test_timeout $(printf '%q' "$venv/bin/python") -m pytest -q -p no:cacheprovider -s \
tests/integration/test_cgroups_v2.py$(quote_args "$@")"

run_in_vm "$inner"

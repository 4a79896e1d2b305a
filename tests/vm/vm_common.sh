# Sourced by tests/vm/run_v2.sh and run_engine_v2.sh: find the venv, the kernel and
# the tools, then `run_in_vm COMMAND` boots the VM (virtme-ng; the host filesystem
# read-only, 2 CPUs, 1 GiB) and runs COMMAND there as root. Exit status: COMMAND's.
# Environment: KERNEL=/boot/vmlinuz-...  VENV=path/to/venv  CODEX32_VM_KVM=1 (use KVM;
# off by default: nested KVM fails on the development hosts, TCG boots in ~35 s).
# Before sourcing, set `me` (the calling script's name, for messages).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
kernel=${KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
if [[ -z "$kernel" || ! -r "$kernel" ]]; then
    echo "$me: no kernel image in /boot (apt-get install linux-image-amd64)" >&2
    exit 2
fi
export PATH="$venv/bin:$PATH"  # vng runs virtme-run from PATH
for tool in vng qemu-system-x86_64; do
    command -v "$tool" >/dev/null || { echo "$me: $tool not found" >&2; exit 2; }
done

# Inside the VM the tests get this long (s); then SIGINT, so that pytest prints where
# it was, which a timeout of the whole VM from outside could not show.
vm_test_timeout=${CODEX32_VM_TEST_TIMEOUT:-600}

kvm=(--disable-kvm)
if [[ "${CODEX32_VM_KVM:-0}" == 1 ]]; then kvm=(); fi

# The caller's extra pytest arguments, quoted for the VM's shell.
quote_args() {
    local out="" arg
    for arg in "$@"; do out+=" $(printf '%q' "$arg")"; done
    printf '%s' "$out"
}

run_in_vm() {
    exec vng "${kvm[@]}" --run "$kernel" --cpus 2 --memory 1G --exec "$1"
}

"""The default seccomp profile, checked without loading it.

The compiled filter is exported as classic BPF and run here on a small interpreter,
so each check asks what the kernel would answer for a syscall with given arguments.
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import pyseccomp
import pytest

from codex32._linux import seccomp
from codex32.config.capabilities import ALL_CAPABILITIES, DOCKER_DEFAULT_CAPABILITIES

if os.uname().machine != "x86_64":
    pytest.skip("the BPF checks below use x86_64 syscall numbers", allow_module_level=True)

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD_FLAGS = 0x003D0F00  # what pthread_create passes
SIGCHLD = 17
AF_INET = 2
AF_VSOCK = 40
ADDR_NO_RANDOMIZE = 0x0040000

DANGEROUS = (
    "mount", "umount2", "unshare", "setns", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "bpf", "keyctl", "add_key", "request_key", "reboot",
    "swapon", "swapoff", "open_by_handle_at", "pivot_root", "chroot", "acct", "settimeofday",
    "clock_settime", "iopl", "ioperm", "perf_event_open", "fsopen", "fsmount", "move_mount",
    "open_tree", "userfaultfd", "kcmp", "pidfd_getfd", "process_madvise", "syslog",
    "lookup_dcookie", "quotactl", "sethostname", "setdomainname", "vhangup", "mbind",
)  # fmt: skip
COMMON = (
    "read", "write", "openat", "close", "execve", "futex", "mmap", "munmap", "brk", "wait4",
    "exit_group", "rt_sigaction", "pipe2", "getrandom", "epoll_wait", "statx", "newfstatat",
    "prctl", "capget", "arch_prctl", "set_tid_address", "rseq", "vfork", "fork",
)  # fmt: skip


class Bpf:
    """A classic BPF interpreter for seccomp programs (the opcodes libseccomp emits)."""

    def __init__(self, program: bytes) -> None:
        self.insns = list(struct.iter_unpack("=HBBI", program))

    def run(self, nr: int, args: tuple[int, ...] = (), arch: int = AUDIT_ARCH_X86_64) -> int:
        full = (*args, *(0,) * (6 - len(args)))
        data = struct.pack("=iIQ6Q", nr, arch, 0, *full)
        acc = index = pc = 0
        mem = [0] * 16
        while True:
            code, jt, jf, k = self.insns[pc]
            pc += 1
            cls = code & 0x07
            if cls == 0x00 and code & 0xE0 == 0x20:  # ld [k]
                acc = struct.unpack_from("=I", data, k)[0]
            elif cls == 0x00 and code & 0xE0 == 0x00:  # ld #k
                acc = k
            elif cls == 0x00 and code & 0xE0 == 0x60:  # ld M[k]
                acc = mem[k]
            elif cls == 0x01 and code & 0xE0 == 0x60:  # ldx M[k]
                index = mem[k]
            elif cls == 0x01 and code & 0xE0 == 0x00:  # ldx #k
                index = k
            elif cls == 0x02:
                mem[k] = acc
            elif cls == 0x03:
                mem[k] = index
            elif cls == 0x04:
                acc = self._alu(code & 0xF0, acc, index if code & 0x08 else k)
            elif cls == 0x05:
                operand = index if code & 0x08 else k
                op = code & 0xF0
                if op == 0x00:
                    pc += k
                    continue
                taken = {
                    0x10: acc == operand,
                    0x20: acc > operand,
                    0x30: acc >= operand,
                    0x40: bool(acc & operand),
                }[op]
                pc += jt if taken else jf
            elif cls == 0x06:
                return acc if code & 0x18 == 0x10 else k
            elif cls == 0x07:
                if code & 0xF8 == 0x00:
                    index = acc
                else:
                    acc = index
            else:
                raise AssertionError(f"unsupported BPF opcode {code:#x}")

    @staticmethod
    def _alu(op: int, acc: int, operand: int) -> int:
        results = {
            0x00: acc + operand,
            0x10: acc - operand,
            0x40: acc | operand,
            0x50: acc & operand,
            0x60: acc << operand,
            0x70: acc >> operand,
            0xA0: acc ^ operand,
        }
        if op not in results:
            raise AssertionError(f"unsupported BPF ALU op {op:#x}")
        return results[op] & 0xFFFFFFFF


def compile_bpf(capabilities: frozenset[str]) -> Bpf:
    seccomp_filter: Any = seccomp.build_default_filter(capabilities)
    with tempfile.TemporaryFile() as file:
        seccomp_filter.export_bpf(file)
        file.seek(0)
        return Bpf(file.read())


def nr(name: str) -> int:
    number: int = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name)
    return number


@pytest.fixture(scope="module")
def no_caps() -> Bpf:
    return compile_bpf(frozenset())


@pytest.fixture(scope="module")
def docker_caps() -> Bpf:
    return compile_bpf(DOCKER_DEFAULT_CAPABILITIES)


def test_profile_parses() -> None:
    profile = seccomp.load_profile()
    assert profile.default_errno == errno.EPERM
    allowed = {name for rule in seccomp.select_rules(frozenset()) for name in rule.names}
    assert {"read", "write", "execve", "openat"} <= allowed
    assert len(allowed) > 300
    for rule in seccomp.select_rules(frozenset(ALL_CAPABILITIES)):
        assert rule.errno_ret in (None, errno.ENOSYS)


@pytest.mark.parametrize("name", [n for n in DANGEROUS if nr(n) >= 0])
def test_dangerous_syscalls_denied_without_caps(no_caps: Bpf, name: str) -> None:
    assert no_caps.run(nr(name)) == EPERM, name


@pytest.mark.parametrize("name", ["mount", "umount2", "unshare", "setns", "bpf", "keyctl"])
def test_docker_default_caps_do_not_open_sys_admin_calls(docker_caps: Bpf, name: str) -> None:
    assert docker_caps.run(nr(name)) == EPERM


@pytest.mark.parametrize("name", COMMON)
def test_common_syscalls_allowed(no_caps: Bpf, docker_caps: Bpf, name: str) -> None:
    assert no_caps.run(nr(name)) == RET_ALLOW
    assert docker_caps.run(nr(name)) == RET_ALLOW


def test_ptrace_allowed_as_docker_does_on_kernels_from_4_8(no_caps: Bpf) -> None:
    # Docker allows ptrace without CAP_SYS_PTRACE since 4.8 stopped it bypassing seccomp.
    assert no_caps.run(nr("ptrace")) == RET_ALLOW
    rules = seccomp.select_rules(frozenset(), kernel=(4, 4))
    assert all("ptrace" not in rule.names for rule in rules)


def test_clone_without_namespace_flags(no_caps: Bpf) -> None:
    clone = nr("clone")
    assert no_caps.run(clone, (SIGCHLD,)) == RET_ALLOW
    assert no_caps.run(clone, (CLONE_THREAD_FLAGS,)) == RET_ALLOW
    for flag in (CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET):
        assert no_caps.run(clone, (flag | SIGCHLD,)) == EPERM
    assert no_caps.run(nr("clone3")) == ENOSYS


def test_sys_admin_opens_mount_and_namespaces() -> None:
    admin = compile_bpf(DOCKER_DEFAULT_CAPABILITIES | {"CAP_SYS_ADMIN"})
    assert admin.run(nr("mount")) == RET_ALLOW
    assert admin.run(nr("clone"), (CLONE_NEWNS | SIGCHLD,)) == RET_ALLOW
    assert admin.run(nr("clone3")) == RET_ALLOW
    assert admin.run(nr("kexec_load")) == EPERM


def test_capability_conditioned_calls(docker_caps: Bpf) -> None:
    assert docker_caps.run(nr("chroot")) == RET_ALLOW  # CAP_SYS_CHROOT is in Docker's set
    assert docker_caps.run(nr("open_by_handle_at")) == EPERM
    rawio = compile_bpf(frozenset({"CAP_SYS_RAWIO", "CAP_DAC_READ_SEARCH"}))
    assert rawio.run(nr("iopl")) == RET_ALLOW
    assert rawio.run(nr("open_by_handle_at")) == RET_ALLOW


def test_argument_rules(no_caps: Bpf) -> None:
    assert no_caps.run(nr("personality"), (0,)) == RET_ALLOW
    assert no_caps.run(nr("personality"), (0xFFFFFFFF,)) == RET_ALLOW
    assert no_caps.run(nr("personality"), (ADDR_NO_RANDOMIZE,)) == EPERM
    assert no_caps.run(nr("socket"), (AF_INET,)) == RET_ALLOW
    assert no_caps.run(nr("socket"), (AF_VSOCK,)) == EPERM


def test_other_abis_are_killed(no_caps: Bpf) -> None:
    assert no_caps.run(3, arch=AUDIT_ARCH_I386) == RET_KILL_PROCESS
    assert no_caps.run(nr("mount") | X32_SYSCALL_BIT) == RET_KILL_PROCESS
    assert no_caps.run(nr("read") | X32_SYSCALL_BIT) == RET_KILL_PROCESS


@pytest.mark.parametrize(
    "capabilities",
    [frozenset(), DOCKER_DEFAULT_CAPABILITIES, frozenset(ALL_CAPABILITIES)],
    ids=["none", "docker", "all"],
)
def test_every_syscall_number_matches_the_profile(capabilities: frozenset[str]) -> None:
    """With zero arguments, the filter's answer equals the rules' for every syscall."""
    program = compile_bpf(capabilities)
    expected: dict[int, int] = {}
    for rule in seccomp.select_rules(capabilities):
        if not all(_holds(cond, 0) for cond in rule.args):
            continue
        action = RET_ALLOW if rule.errno_ret is None else 0x00050000 | rule.errno_ret
        for name in rule.names:
            if nr(name) >= 0:
                assert expected.setdefault(nr(name), action) == action, name
    for number in range(512):
        assert program.run(number) == expected.get(number, EPERM), number


def _holds(cond: seccomp.ArgCondition, value: int) -> bool:
    compare = {
        "SCMP_CMP_NE": value != cond.value,
        "SCMP_CMP_EQ": value == cond.value,
        "SCMP_CMP_LT": value < cond.value,
        "SCMP_CMP_LE": value <= cond.value,
        "SCMP_CMP_GT": value > cond.value,
        "SCMP_CMP_GE": value >= cond.value,
        "SCMP_CMP_MASKED_EQ": value & cond.value == cond.value_two,
    }
    return compare[cond.op]


def test_selection_honours_arches_and_excludes() -> None:
    s390 = seccomp.select_rules(frozenset(), arch="s390x")
    clone_rules = [rule for rule in s390 if rule.names == ("clone",)]
    assert [rule.args[0].arg for rule in clone_rules] == [1]
    amd64 = seccomp.select_rules(frozenset({"CAP_SYS_ADMIN"}), arch="amd64")
    assert not any(rule.args for rule in amd64 if "clone" in rule.names)
    assert all(rule.errno_ret is None for rule in amd64)


def test_kernel_version_parsing() -> None:
    assert seccomp._kernel_version("6.18.44-fc-v782") == (6, 18)
    assert seccomp._kernel_version("4.8") == (4, 8)
    assert seccomp._kernel_version("5.10.0-rc1+") == (5, 10)


def test_unreadable_profile_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "profile.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}')
    with pytest.raises(RuntimeError, match="allow-list"):
        seccomp.load_profile(str(bad))
    with pytest.raises(RuntimeError, match="cannot read"):
        seccomp.load_profile(str(tmp_path / "missing.json"))

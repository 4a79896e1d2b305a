"""The cgroup v2 device policy: an eBPF program built from the allow list (runc's
``devicefilter``, crun's ``ebpf.c``).

cgroup v2 has no ``devices.allow``: the kernel runs a BPF_PROG_TYPE_CGROUP_DEVICE
program on every open and mknod of a device node by a process of the cgroup, with
``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`` in R1
(``access_type`` = access << 16 | type), and allows the access when it returns 1.

The program loads the four values, then tries each rule in turn (a rule that matches
returns 1) and returns 0 at the end: default deny, as the v1 rules after ``a``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from codex32._cgroups.devices import ANY, DeviceRule

# Opcodes (linux/bpf.h, linux/bpf_common.h).
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54
_ALU32_RSH_K = 0x74
_ALU32_MOV_X = 0xBC
_ALU64_MOV_K = 0xB7
_JMP_JNE_K = 0x55
_JMP_EXIT = 0x95

_TYPES = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# Registers: R1 the context, then R2 type, R3 access, R4 major, R5 minor; R1 is
# reused as scratch once they are loaded.
_CTX, _TYPE, _ACC, _MAJOR, _MINOR, _SCRATCH = 1, 2, 3, 4, 5, 1


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _rule_block(rule: DeviceRule) -> bytes:
    """Return 1 if the access matches ``rule``; otherwise fall through to the next."""
    checks: list[tuple[int, int, int]] = []  # (code, dst, imm) of a "jump if no match"
    if rule.type != "a":
        checks.append((_JMP_JNE_K, _TYPE, _TYPES[rule.type]))
    access = sum(_ACCESS[c] for c in set(rule.access))
    if access != 7:
        # Any access bit the rule does not grant: no match.
        checks.append((_ALU32_MOV_X, _SCRATCH, _ACC))
        checks.append((_ALU32_AND_K, _SCRATCH, 7 & ~access))
        checks.append((_JMP_JNE_K, _SCRATCH, 0))
    if rule.type != "a" and rule.major != ANY:
        checks.append((_JMP_JNE_K, _MAJOR, rule.major))
    if rule.type != "a" and rule.minor != ANY:
        checks.append((_JMP_JNE_K, _MINOR, rule.minor))
    tail = _insn(_ALU64_MOV_K, 0, imm=1) + _insn(_JMP_EXIT)
    out = b""
    for index, (code, dst, imm) in enumerate(checks):
        if code == _ALU32_MOV_X:
            out += _insn(code, dst, src=imm)
        elif code == _JMP_JNE_K:
            skip = len(checks) - index - 1 + 2  # the checks left, then the return
            out += _insn(code, dst, off=skip, imm=imm)
        else:
            out += _insn(code, dst, imm=imm)
    return out + tail


def device_program(rules: Sequence[DeviceRule]) -> bytes:
    """The program's instructions for an allow list (everything else is denied)."""
    prologue = (
        _insn(_LDX_MEM_W, _TYPE, _CTX, 0)
        + _insn(_ALU32_AND_K, _TYPE, imm=0xFFFF)
        + _insn(_LDX_MEM_W, _ACC, _CTX, 0)
        + _insn(_ALU32_RSH_K, _ACC, imm=16)
        + _insn(_LDX_MEM_W, _MAJOR, _CTX, 4)
        + _insn(_LDX_MEM_W, _MINOR, _CTX, 8)
    )
    deny = _insn(_ALU64_MOV_K, 0, imm=0) + _insn(_JMP_EXIT)
    return prologue + b"".join(_rule_block(rule) for rule in rules) + deny


def allows(rules: Sequence[DeviceRule], kind: str, major: int, minor: int, access: str) -> bool:
    """What the program decides, computed in Python (the unit tests' oracle)."""
    wanted = set(access)
    return any(
        (rule.type in ("a", kind))
        and wanted <= set(rule.access)
        and (rule.type == "a" or rule.major in (ANY, major))
        and (rule.type == "a" or rule.minor in (ANY, minor))
        for rule in rules
    )

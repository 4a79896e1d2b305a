"""The v2 device program, run on a small eBPF interpreter against the rule oracle.

The kernel's verifier and the real decision are tested in the v2 VM
(tests/integration/test_cgroups_v2.py); here every rule shape and access is checked
without root: the program must decide as ``allows`` (the devices cgroup's semantics).
"""

from __future__ import annotations

import itertools
import struct

import pytest

from codex32._cgroups.devicefilter import allows, device_program
from codex32._cgroups.devices import ANY, DEFAULT_RULES, DeviceRule

_MASK32 = 0xFFFFFFFF


def execute(program: bytes, kind: str, major: int, minor: int, access: str) -> int:
    """Run the subset of eBPF the program uses on one bpf_cgroup_dev_ctx."""
    type_code = {"b": 1, "c": 2}[kind]
    access_bits = sum({"m": 1, "r": 2, "w": 4}[c] for c in access)
    ctx = struct.pack("<III", (access_bits << 16) | type_code, major, minor)
    regs = [0] * 11
    pc = 0
    insns = [struct.unpack("<BBhi", program[i : i + 8]) for i in range(0, len(program), 8)]
    for _ in range(10_000):
        code, registers, off, imm = insns[pc]
        dst, src = registers & 0xF, registers >> 4
        pc += 1
        if code == 0x61:  # ldx w: only from the context
            assert src == 1 and regs[1] == 0
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & _MASK32
        elif code == 0x74:
            regs[dst] = (regs[dst] & _MASK32) >> imm
        elif code == 0xBC:
            regs[dst] = regs[src] & _MASK32
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            if regs[dst] != imm:
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("the program did not exit")


RULE_SETS = [
    DEFAULT_RULES,
    (),
    (DeviceRule("a", ANY, ANY, "rwm"),),
    (DeviceRule("b", 7, 0, "r"), DeviceRule("c", 10, 229, "rw")),
    (DeviceRule("c", ANY, 3, "w"), DeviceRule("b", 8, ANY, "mr")),
]
PROBES = list(
    itertools.product(
        "cb", [1, 5, 7, 8, 10, 136], [0, 1, 3, 5, 11, 229], ["r", "w", "m", "rw", "rwm", "wm"]
    )
)


@pytest.mark.parametrize("rules", RULE_SETS, ids=lambda r: ";".join(map(str, r)) or "none")
def test_the_program_decides_as_the_rules(rules: tuple[DeviceRule, ...]) -> None:
    program = device_program(rules)
    for kind, major, minor, access in PROBES:
        expected = allows(rules, kind, major, minor, access)
        got = execute(program, kind, major, minor, access)
        assert got == int(expected), (kind, major, minor, access)


def test_dockers_defaults() -> None:
    assert allows(DEFAULT_RULES, "c", 1, 3, "rwm")  # null
    assert allows(DEFAULT_RULES, "c", 136, 4, "rw")  # a pts of its own
    assert allows(DEFAULT_RULES, "b", 7, 0, "m")  # mknod, harmless then
    assert not allows(DEFAULT_RULES, "b", 7, 0, "r")  # the loop device of the issue
    assert not allows(DEFAULT_RULES, "c", 1, 11, "w")  # /dev/kmsg
    assert not allows(DEFAULT_RULES, "c", 10, 229, "rw")  # fuse, unless asked
    assert [str(r) for r in DEFAULT_RULES[:3]] == ["c *:* m", "b *:* m", "c 1:3 rwm"]
    assert str(DeviceRule("a", ANY, ANY, "rwm")) == "a rwm"

"""Docker's default seccomp profile, compiled with libseccomp for this host.

The profile is data: ``seccomp_default.json`` next to this module is moby/moby's
``profiles/seccomp/default.json`` as of commit 00f3d189e420d485e42d15fe494f96d272284e0e
(the revision with the AF_VSOCK ``socket`` rule), copied on 2026-11-29. The
``archMap`` is dropped (we filter the native architecture only); each rule is kept as
upstream has it, so a newer upstream file can be diffed and dropped in.

Rule selection follows moby's ``profiles/seccomp/seccomp_linux.go``: a rule applies
when the container holds *all* of its ``includes.caps``, *none* of its
``excludes.caps``, the machine matches ``includes.arches`` / ``excludes.arches`` and
the kernel is at least ``includes.minKernel``. Anything else fails with EPERM
(``defaultErrnoRet``); ``clone3`` fails with ENOSYS without CAP_SYS_ADMIN, so that libc
falls back to ``clone``, whose namespace flags the filter can inspect.

Syscalls run on another ABI (i386 ``int 0x80``, x32) are not in the filter and kill
the process: the engine runs 64-bit programs only.

This runs in the container's child right before exec: pyseccomp (about 30 ms to
import, it runs ``ldconfig -p``) is imported lazily, so a fork server can import it
once; the parsed profile is cached for the same reason.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, NamedTuple

PROFILE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")

# os.uname().machine -> the GOARCH-style names the profile uses.
_MACHINE_TO_PROFILE_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "x86",
    "i386": "x86",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

_OPERATORS = ("NE", "LT", "LE", "EQ", "GE", "GT", "MASKED_EQ")


class ArgCondition(NamedTuple):
    """One comparison on a syscall argument, as the profile writes it."""

    arg: int  # argument number, 0-5 (the profile's "index")
    op: str  # "SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ" ...
    value: int
    value_two: int  # the expected value for MASKED_EQ (then ``value`` is the mask)


class SeccompRule(NamedTuple):
    """A profile rule that applies to this container: action for these syscalls."""

    names: tuple[str, ...]
    errno_ret: int | None  # None: allow; a number: fail with that errno
    args: tuple[ArgCondition, ...]


class Profile(NamedTuple):
    """The parsed profile: default errno and every rule with its conditions."""

    default_errno: int
    rules: tuple[dict[str, Any], ...]


_profiles: dict[str, Profile] = {}  # by path: read once per process (or fork server)


def load_profile(path: str = PROFILE_PATH) -> Profile:
    """Read and check a profile file (Docker's format); each path is read once."""
    cached = _profiles.get(path)
    if cached is not None:
        return cached
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read seccomp profile {path}: {exc}") from exc
    if (
        not isinstance(data, dict)
        or data.get("defaultAction") != "SCMP_ACT_ERRNO"
        or not isinstance(data.get("syscalls"), list)
    ):
        raise RuntimeError(f"seccomp profile {path}: expected an SCMP_ACT_ERRNO allow-list")
    profile = Profile(int(data.get("defaultErrnoRet", errno.EPERM)), tuple(data["syscalls"]))
    _profiles[path] = profile
    return profile


def _kernel_version(release: str) -> tuple[int, int]:
    """``6.18.44-fc`` -> (6, 18)."""
    parts = release.split(".")
    numbers = []
    for part in parts[:2]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits or 0))
    while len(numbers) < 2:
        numbers.append(0)
    return numbers[0], numbers[1]


def select_rules(
    capabilities: frozenset[str],
    profile: Profile | None = None,
    *,
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> list[SeccompRule]:
    """The rules that apply to a container with these capabilities on this machine.

    Pure: no libseccomp, so the selection is testable anywhere. ``arch`` (profile
    naming, e.g. "amd64") and ``kernel`` default to the running host.
    """
    if profile is None:
        profile = load_profile()
    if arch is None:
        machine = os.uname().machine
        arch = _MACHINE_TO_PROFILE_ARCH.get(machine, machine)
    if kernel is None:
        kernel = _kernel_version(os.uname().release)
    selected: list[SeccompRule] = []
    for raw in profile.rules:
        includes: dict[str, Any] = raw.get("includes") or {}
        excludes: dict[str, Any] = raw.get("excludes") or {}
        if any(cap in capabilities for cap in excludes.get("caps") or ()):
            continue
        if arch in (excludes.get("arches") or ()):
            continue
        if not all(cap in capabilities for cap in includes.get("caps") or ()):
            continue
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        min_kernel = includes.get("minKernel")
        if min_kernel and kernel < _kernel_version(min_kernel):
            continue
        action = raw.get("action")
        if action == "SCMP_ACT_ALLOW":
            errno_ret = None
        elif action == "SCMP_ACT_ERRNO":
            errno_ret = int(raw.get("errnoRet", profile.default_errno))
        else:
            raise RuntimeError(f"seccomp profile: unsupported action {action!r} in {raw}")
        args = tuple(
            ArgCondition(int(a["index"]), a["op"], int(a["value"]), int(a.get("valueTwo", 0)))
            for a in raw.get("args") or ()
        )
        selected.append(SeccompRule(tuple(raw["names"]), errno_ret, args))
    return selected


def build_default_filter(capabilities: frozenset[str]) -> Any:
    """Compile the default profile for this capability set into a ``SyscallFilter``.

    Names libseccomp does not know on this architecture (32-bit variants, other
    arches' calls, calls newer than the library) are skipped, as Docker does. The
    filter does not set no_new_privs itself: the caller owns that step.
    """
    import pyseccomp

    profile = load_profile()
    rules = select_rules(capabilities, profile)
    operators = {f"SCMP_CMP_{name}": getattr(pyseccomp, name) for name in _OPERATORS}
    native = pyseccomp.Arch.NATIVE
    resolve = pyseccomp.resolve_syscall

    seccomp_filter: Any = pyseccomp.SyscallFilter(pyseccomp.ERRNO(profile.default_errno))
    # no_new_privs is the caller's step (as in runc); other ABIs kill the process; a
    # binary tree keeps the arg-checked and denied calls from walking ~330 compares;
    # SYSRAWRC makes a kernel refusal surface as its errno, not ECANCELED.
    seccomp_filter.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    seccomp_filter.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    seccomp_filter.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    seccomp_filter.set_attr(pyseccomp.Attr.API_SYSRAWRC, 1)
    for rule in rules:
        action = pyseccomp.ALLOW if rule.errno_ret is None else pyseccomp.ERRNO(rule.errno_ret)
        conditions = []
        for cond in rule.args:
            op = operators.get(cond.op)
            if op is None:
                raise RuntimeError(f"seccomp profile: unsupported operator {cond.op!r}")
            if op == pyseccomp.MASKED_EQ:
                conditions.append(pyseccomp.Arg(cond.arg, op, cond.value, cond.value_two))
            else:
                conditions.append(pyseccomp.Arg(cond.arg, op, cond.value))
        # Conditions on distinct arguments must all hold (one rule); several on the
        # same argument are alternatives (one rule each), as runc compiles them.
        indexes = [cond.arg for cond in rule.args]
        if len(set(indexes)) == len(indexes):
            condition_sets = [conditions]
        else:
            condition_sets = [[cond] for cond in conditions]
        for name in rule.names:
            number = resolve(native, name)
            if number < 0:
                continue
            for condition_set in condition_sets:
                try:
                    seccomp_filter.add_rule(action, number, *condition_set)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"seccomp: cannot add the rule for {name}: {exc.strerror}"
                    ) from exc
    return seccomp_filter


def load_default_filter(capabilities: frozenset[str]) -> None:
    """Build the default filter and install it on the calling thread.

    The last step before exec: no_new_privs must be set already (or the process must
    hold CAP_SYS_ADMIN), otherwise the kernel refuses with EACCES.
    """
    seccomp_filter = build_default_filter(capabilities)
    try:
        seccomp_filter.load()
    except OSError as exc:
        hint = " (set no_new_privs first)" if exc.errno == errno.EACCES else ""
        raise OSError(
            exc.errno, f"seccomp: cannot load the default filter: {exc.strerror}{hint}"
        ) from exc


def compile_default_bpf(capabilities: frozenset[str]) -> bytes:
    """The default filter for this capability set as raw BPF (``struct sock_filter[]``).

    The engine compiles once and caches the bytes; the container's set-up process
    then only hands them to the kernel (``load_bpf``), without importing libseccomp.
    """
    import tempfile

    seccomp_filter = build_default_filter(capabilities)
    with tempfile.TemporaryFile() as out:
        seccomp_filter.export_bpf(out)
        out.seek(0)
        return out.read()

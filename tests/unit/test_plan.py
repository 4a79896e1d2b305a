"""Profiles and plans are pure data: checked here without root or a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex32 import ContainerConfig, IsolationType, TmpfsMount, Ulimit, Volume
from codex32._images.image import HostBind, ImageConfig
from codex32._plan.plan import INIT_PATH, ContainerPaths, Plan, Step, build_plan
from codex32._plan.profiles import resolve_profile
from codex32.config.capabilities import (
    ALL_CAPABILITIES,
    DOCKER_DEFAULT_CAPABILITIES,
    HOST_DANGEROUS_CAPABILITIES,
)

TEMPLATE = ImageConfig(
    command=("sh",),
    env={"PATH": "/bin"},
    workdir="/",
    binds=(HostBind("/usr", "/usr"),),
    writable=("/home/bot",),
)
PATHS = ContainerPaths(rootfs="/s/rootfs", upper="/s/upper", work="/s/work", lower=("/t",))


def plan_for(**kwargs: object) -> Plan:
    config = ContainerConfig(image="t", **kwargs)
    return build_plan("c", config, resolve_profile(config), TEMPLATE, PATHS, hostname="h")


def ops(plan: Plan) -> list[str]:
    return [step["op"] for step in plan.steps]


def step(plan: Plan, op: str) -> Step:
    return next(s for s in plan.steps if s["op"] == op)


def test_namespaces_per_level() -> None:
    assert plan_for(isolation="minimal").namespaces == ["pid", "mount"]
    standard = plan_for(isolation="standard")
    assert set(standard.namespaces) == {"pid", "mount", "uts", "ipc", "net"}
    assert standard.steps[0] == {"op": "unshare", "namespaces": ["cgroup"]}
    strict = plan_for(isolation="strict")
    assert set(strict.namespaces) == {"user", "pid", "mount", "uts", "ipc", "net", "time"}
    assert strict.uid_mappings == [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_capabilities_per_level() -> None:
    assert set(step(plan_for(isolation="standard"), "capabilities")["keep"]) == set(
        DOCKER_DEFAULT_CAPABILITIES
    )
    assert step(plan_for(isolation="strict"), "bounding_set")["keep"] == []
    minimal = set(step(plan_for(isolation="minimal"), "bounding_set")["keep"])
    assert minimal == set(ALL_CAPABILITIES) - HOST_DANGEROUS_CAPABILITIES


def test_cap_add_and_drop() -> None:
    keep = set(step(plan_for(cap_add=["NET_ADMIN"], cap_drop=["CHOWN"]), "capabilities")["keep"])
    assert "CAP_NET_ADMIN" in keep
    assert "CAP_CHOWN" not in keep
    assert step(plan_for(cap_drop=["ALL"]), "capabilities")["keep"] == []


def test_restrictions_per_level() -> None:
    minimal = ops(plan_for(isolation="minimal"))
    assert "seccomp" not in minimal
    assert "no_new_privs" not in minimal
    assert "mask" not in minimal
    assert "hostname" not in minimal  # the host's UTS namespace must not be touched
    assert "readonly_paths" in minimal  # /proc/sys is the host's sysctls
    standard = ops(plan_for(isolation="standard"))
    for op in ("seccomp", "no_new_privs", "mask", "readonly_paths", "hostname", "loopback_up"):
        assert op in standard
    assert "remount_root" not in standard
    strict = plan_for(isolation="strict")
    assert "remount_root" in ops(strict)
    tmpfs_targets = [s["target"] for s in strict.steps if s["op"] == "tmpfs"]
    assert tmpfs_targets == ["/tmp", "/home/bot"]
    assert step(strict, "overlay")["userxattr"] is True


def test_privileges_are_dropped_in_order() -> None:
    order = ops(plan_for(isolation="strict"))
    sequence = ["pivot_root", "bounding_set", "user", "capabilities", "no_new_privs"]
    sequence += ["seccomp", "exec"]
    assert [order.index(op) for op in sequence] == sorted(order.index(op) for op in sequence)
    assert order[-1] == "exec"
    assert order.index("overlay") < order.index("proc") < order.index("pivot_root")


def test_exec_step() -> None:
    plan = plan_for(command=["echo", "hi"], env={"A": "1"}, working_dir="/w", user="bot")
    exec_step = step(plan, "exec")
    assert exec_step["args"] == ["echo", "hi"]
    assert "A=1" in exec_step["env"]
    assert "HOSTNAME=h" in exec_step["env"]
    assert exec_step["cwd"] == "/w"
    assert step(plan, "user")["user"] == "bot"
    assert step(plan, "mkdir")["target"] == "/w"
    assert step(plan_for(), "exec")["args"] == ["sh"]  # the template's command


def test_init_binds_tini_outside_template_binds() -> None:
    plan = plan_for(init=True)
    binds = [s for s in plan.steps if s["op"] == "bind" and s["what"] == "init"]
    assert binds[0]["target"] == INIT_PATH
    assert INIT_PATH.startswith("/dev/")
    assert step(plan, "exec")["init"] == INIT_PATH


def test_mounts_and_limits(tmp_path: Path) -> None:
    plan = plan_for(
        volumes=[Volume(source=str(tmp_path), target="/data", read_only=True)],
        tmpfs=[TmpfsMount(target="/run", size_bytes=1 << 20)],
        ulimits=[Ulimit(name="nofile", soft=10, hard=20)],
        read_only=True,
    )
    volume = next(s for s in plan.steps if s["op"] == "bind" and s["what"] == "volume")
    assert (volume["target"], volume["read_only"]) == ("/data", True)
    assert any(s["op"] == "tmpfs" and s["target"] == "/run" for s in plan.steps)
    assert step(plan, "rlimits")["limits"] == [[7, 10, 20]]
    assert "remount_root" in ops(plan)


def test_plan_round_trips_through_json() -> None:
    plan = plan_for(isolation="strict")
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_json(plan.describe()) == plan


@pytest.mark.parametrize("level", list(IsolationType))
def test_every_level_ends_in_exec(level: IsolationType) -> None:
    assert ops(plan_for(isolation=level.value))[-1] == "exec"


def test_a_tty_gets_its_console_right_after_pivot_root() -> None:
    """-t: PID 1 opens its terminal from its own /dev/pts once that is its /dev."""
    ops = [step["op"] for step in plan_for(tty=True).steps]
    assert ops[ops.index("pivot_root") + 1] == "console"
    assert ops.index("console") < ops.index("user")  # before privileges are dropped
    assert "console" not in [step["op"] for step in plan_for().steps]


def test_mounts_go_parents_first_whatever_the_order_given(tmp_path: Path) -> None:
    # -v X:/data --tmpfs /data/t: the volume first, or it would hide the tmpfs.
    plan = plan_for(
        tmpfs=[TmpfsMount(target="/data/t"), TmpfsMount(target="/run")],
        volumes=[
            Volume(source=str(tmp_path), target="/data/t/deeper"),
            Volume(source=str(tmp_path), target="/data"),
        ],
    )
    targets = [s["target"] for s in plan.steps if s.get("what") == "volume" or s["op"] == "tmpfs"]
    assert targets == ["/run", "/data", "/data/t", "/data/t/deeper"]


def test_a_device_is_bound_after_dev_with_its_permissions() -> None:
    from codex32 import DeviceMapping

    plan = plan_for(
        devices=[DeviceMapping(host_path="/dev/null", container_path="/dev/xvdc", permissions="r")]
    )
    at = ops(plan).index("dev")
    device = plan.steps[at + 1]
    assert (device["op"], device["what"], device["target"]) == ("bind", "device", "/dev/xvdc")
    assert device["read_only"] is True


def test_a_read_only_root_gets_a_sized_tmp() -> None:
    from codex32._plan.plan import TMP_SIZE

    plan = plan_for(isolation="strict")
    tmp = next(s for s in plan.steps if s["op"] == "tmpfs" and s["target"] == "/tmp")
    assert tmp["size"] == TMP_SIZE == 64 << 20


def test_device_rules_per_level() -> None:
    from codex32 import DeviceMapping
    from codex32._cgroups.devices import DEFAULT_RULES, DeviceRule, device_rules

    assert device_rules(ContainerConfig(image="t", isolation="minimal")) is None
    assert device_rules(ContainerConfig(image="t", isolation="strict")) == DEFAULT_RULES
    given = DeviceMapping(host_path="/dev/null", container_path="/dev/n2", permissions="rw")
    rules = device_rules(ContainerConfig(image="t", devices=[given]))
    assert rules == (*DEFAULT_RULES, DeviceRule("c", 1, 3, "rw"))

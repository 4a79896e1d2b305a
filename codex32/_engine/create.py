"""Create: a config checked and compiled, the container's directory and record made."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from codex32._cgroups.devices import DeviceRule, device_rules
from codex32._engine import container as container_module
from codex32._engine import records
from codex32._engine.image_defaults import RootSource, apply_image_defaults, image_meta
from codex32._plan.plan import ContainerPaths, Plan, build_plan, command_args
from codex32._plan.profiles import Profile
from codex32._runtime.faults import point as fault_point
from codex32._store.state import ContainerRecord, storage_error, write_text_atomic
from codex32.config.container import ContainerConfig
from codex32.errors import CgroupError, Codex32Error, ConfigError, ImageError, LaunchError

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine

log = logging.getLogger("codex32")
#: A script given as the image runs in this template, bound read-only here.
SCRIPT_TEMPLATE = "python"
SCRIPT_DIR = "/app"


def compile_plan(
    engine: ContainerEngine,
    container_id: str,
    config: ContainerConfig,
    profile: Profile,
    source: RootSource,
) -> Plan:
    directory = engine._store.directory(container_id)
    paths = ContainerPaths(
        rootfs=str(directory / "rootfs"),
        upper=str(directory / "upper"),
        work=str(directory / "work"),
        lower=source.lower,
        lower_base=source.lower_base,
    )
    program = None
    if profile.seccomp:
        from codex32._plan.seccomp_cache import default_program

        program = str(default_program(engine.settings.storage_dir, profile.capabilities))
    return build_plan(
        config.name or container_id[:12],
        config,
        profile,
        source.image_config,
        paths,
        hostname=config.hostname or container_id[:12],
        seccomp_program=program,
        network_files=engine._networking.files(container_id, profile.network),
    )


def create(engine: ContainerEngine, config: ContainerConfig) -> Container:
    require_root()
    config, warnings = enforceable(engine, script_image(config))
    profile = engine.profile(config)
    engine._store.ensure_layout()
    if profile.userns:
        check_traversable(engine.settings.storage_dir, engine.settings.userns_uid_base)
    source = engine.images.root_for(config, profile, build=True)
    config = apply_image_defaults(config, source.image_config)
    if not command_args(config, source.image_config):
        raise ConfigError(
            f"image {config.image} has no Entrypoint or Cmd, and no command was given",
            hint="give the command after the image",
        )
    container_id = secrets.token_hex(32)
    name = config.name or container_id[:12]
    directory = engine._store.directory(container_id)
    record = ContainerRecord(
        id=container_id, name=name, image=config.image, warnings=warnings,
        auto_remove=config.auto_remove,
    )  # fmt: skip
    # The directory first, then the name: a name never points at nothing. The
    # operation lock marks the creation as under way until state.json exists, so a
    # concurrent init_engine()'s reconcile leaves the half-made directory alone.
    try:
        directory.mkdir(mode=0o700)
    except OSError as exc:
        raise storage_error(exc, directory) from exc
    try:
        with engine._store.operation(container_id):
            engine._store.reserve_name(name, container_id)
            for sub in ("upper", "work", "rootfs"):
                (directory / sub).mkdir(mode=0o755)
            if profile.userns:
                # Its root (host uid/gid base) mounts its overlay from inside its
                # user namespace: it may traverse (group x), no other user may.
                base = engine.settings.userns_uid_base
                os.chown(directory, 0, base)
                os.chmod(directory, 0o710)
                for sub in ("upper", "work"):
                    os.chown(directory / sub, base, base)
            else:
                os.chmod(directory, 0o700)  # Docker's overlay2 layer directories
            # What runs the container is fsync'd only if it outlives a power cut: an
            # --rm container is removed by ``recover`` then (its state.json, durable,
            # says so), never run again (docs/architecture.md, "State on disk").
            durable = not config.auto_remove
            engine._store.save_config(container_id, config.model_dump(mode="json"), durable=durable)
            fault_point("create.config")
            write_private(directory / "image.json", json.dumps(image_meta(source)), durable)
            hostname = config.hostname or container_id[:12]
            engine._networking.prepare(
                container_id, name, hostname, config, profile.network, background_refresh=True,
                durable=durable,
            )  # fmt: skip
            plan = compile_plan(engine, container_id, config, profile, source)
            write_private(directory / "plan.json", plan.to_json(), durable)  # -e secrets
            engine._store.save_created(record)  # the last: durable, it commits the rest
    except BaseException as exc:
        with contextlib.suppress(Codex32Error, OSError):  # (reconcile frees a lease left)
            engine._networking.release(container_id)
        engine._store.delete(record)
        if isinstance(exc, OSError):  # a full disk, most often
            raise storage_error(exc, directory) from exc
        raise
    container = container_module.Container(engine, record)
    records.event(engine, container, "create")
    return container


def enforceable(
    engine: ContainerEngine, config: ContainerConfig
) -> tuple[ContainerConfig, list[str]]:
    """Refuse limits the host cannot enforce, or drop them with a warning each when
    the config asks for best effort; --memory falls back to RLIMIT_AS.

    Returns the config to create and the warnings (kept in the record, logged).
    """
    missing = engine._cgroups.unenforceable(config.resources)
    if not missing:
        return config, []
    warnings: list[str] = []
    best_effort = config.resources.best_effort
    memory_only = set(missing) == {"memory_bytes"}
    has_as = any(u.name == "as" for u in config.ulimits)
    no_memcg = "memory_bytes" in missing and engine._cgroups.lacks_controller("memory")
    if no_memcg and (memory_only or best_effort) and not has_as:
        from codex32.config.container import Ulimit

        size = config.resources.memory_bytes or 0
        warnings.append(
            "no memory cgroup controller on this host: --memory is enforced per process "
            f"with RLIMIT_AS={size} instead (a container's processes together may use more)"
        )
        config = config.model_copy(
            update={
                "ulimits": [*config.ulimits, Ulimit(name="as", soft=size, hard=size)],
                "resources": config.resources.model_copy(update={"memory_bytes": None}),
            }
        )
        del missing["memory_bytes"]
    if missing and best_effort:
        dropped: dict[str, object] = {}
        for name, reason in sorted(missing.items()):
            dropped[name] = [] if isinstance(getattr(config.resources, name), list) else None
            warnings.append(f"{name} is not enforced (best effort): {reason}")
        config = config.model_copy(
            update={"resources": config.resources.model_copy(update=dropped)}
        )
    elif missing:
        fields = "; ".join(f"{f}: {why}" for f, why in sorted(missing.items()))
        raise CgroupError(
            f"this host cannot enforce {fields}",
            hint="drop the limit, fix the host as said, "
            "or ask for best effort (--limits best-effort)",
        )
    for warning in warnings:
        log.warning("%s", warning)
    return config, warnings


def device_rules_of(container: Container, config: ContainerConfig) -> tuple[DeviceRule, ...] | None:
    """The container's device allow list, its ``--device`` nodes read now."""
    try:
        return device_rules(config)
    except OSError as exc:
        raise LaunchError(
            f"device {exc.filename}: {exc.strerror}", container=container.name, step="devices",
            errno=exc.errno, path=exc.filename,
            hint="the device went away since the container was created: attach it again, "
            "or recreate the container without it",
        ) from None  # fmt: skip


def script_image(config: ContainerConfig) -> ContainerConfig:
    """``image=/path/bot.py`` (the original design's quick start): run that script in
    the python template, its folder bound read-only at /app."""
    if not config.image.endswith(".py"):
        return config
    script = Path(config.image)
    if not script.is_file():
        raise ImageError(f"bot script {script} does not exist", hint="give the path of a .py file")
    from codex32.config.container import Volume

    volume = Volume(source=str(script.parent), target=SCRIPT_DIR, read_only=True)
    return config.model_copy(
        update={
            "image": SCRIPT_TEMPLATE,
            "volumes": [*config.volumes, volume],
            "command": ["python3", f"{SCRIPT_DIR}/{script.name}", *config.command],
        }
    )


def require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError(
            "codex32 needs root: it creates namespaces, mounts and cgroups",
            hint="run it with sudo, or as the host service",
        )


def write_private(path: Path, text: str, durable: bool) -> None:
    """Write a file only root may read (0600 from its creation on), atomically;
    ``durable``: fsync'd, a part of the create ``save_created`` commits."""
    write_text_atomic(path, text, fsync=durable)


def check_traversable(storage: Path, uid: int) -> None:
    """A user-namespaced root (host uid and gid ``uid``) must be able to reach its
    layers: by the storage tree's group (``ensure_layout``), or as "other" above it."""
    for path in [storage, *storage.parents]:
        st = path.stat()
        by_group = st.st_gid == uid and st.st_mode & 0o010
        if st.st_uid != uid and not by_group and not st.st_mode & 0o001:
            raise ConfigError(
                f"{path} is not searchable by other users, so a STRICT container's root "
                f"(host uid {uid}) cannot reach its layers under {storage}",
                hint=f"chmod o+x {path}, or set CODEX32_STORAGE_DIR to a path that is",
            )

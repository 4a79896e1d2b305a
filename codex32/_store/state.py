"""Container records on disk: one directory per container, atomic JSON writes.

Layout under the storage directory::

    containers/ID/config.json   what the container was created from
    containers/ID/state.json    status, pid (+ its start time), exit code, times
    containers/ID/upper, work   the overlay's writable layer
    containers/ID/rootfs        the overlay's mount point (mounted only inside the
                                container's own mount namespace)
    names/NAME -> ../containers/ID   a symlink: creating it reserves the name atomically
    names.lock                  held while a name is reserved or released

Every write is atomic (a temp file renamed over): a reader, or a writer killed half-way,
sees the old file or the new one. Only the writes that must outlive a power cut are
fsync'd (``is_durable_change``; docs/architecture.md, "State on disk"): the create, an
outcome, the user's stop; the rest (running, pids, cgroup paths) describe processes and
cgroups that a reboot takes away anyway, as runc's and crun's state in /run does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from codex32.errors import (
    ConfigError,
    ContainerError,
    ContainerNotFoundError,
    DamagedRecordError,
    printable,
)


class ContainerState(StrEnum):
    """The lifecycle states (Docker's names)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    EXITED = "exited"
    REMOVED = "removed"


@dataclass
class ContainerRecord:
    """What state.json holds."""

    id: str
    name: str
    image: str
    status: ContainerState = ContainerState.CREATED
    pid: int | None = None
    pid_start_time: int | None = None
    exit_code: int | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    signal: int = 0
    oom_killed: bool = False
    monitor_pid: int | None = None
    monitor_start_time: int | None = None
    restart_count: int = 0
    stopped_by_user: bool = False
    cgroup_paths: dict[str, str] = field(default_factory=dict)
    #: The last run's figures, read from its cgroup at exit, before the monitor removes
    #: the cgroup (None: still running, or the host has no such counter).
    memory_peak_bytes: int | None = None
    cpu_usage_ns: int | None = None
    oom_kills: int = 0
    #: What the engine could not do as asked (best-effort limits it dropped).
    warnings: list[str] = field(default_factory=list)
    #: Found dead with no exit written (a reboot, a crash): ``recover`` acts on it once.
    died_unseen: bool = False
    #: A restart of an ``--rm`` container is under way: its monitor keeps it (Docker's).
    keep_after_exit: bool = False
    #: Created with ``--rm``: its monitor removes it at exit (``is_durable_change``).
    auto_remove: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form (by hand: ``dataclasses.asdict`` deep-copies every value)."""
        data = {key: getattr(self, key) for key in _FIELD_ORDER}
        data["status"] = self.status.value
        data["cgroup_paths"] = dict(self.cgroup_paths)
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerRecord:
        """Inverse of ``to_dict``."""
        data = {k: v for k, v in data.items() if k in _FIELDS}
        data["status"] = ContainerState(data["status"])
        return cls(**data)


_FIELD_ORDER = tuple(ContainerRecord.__dataclass_fields__)
_FIELDS = frozenset(_FIELD_ORDER)
#: How young a lock-less container directory must be to count as being created.
_CREATION_GRACE = 10.0
#: A container directory being removed (``StateStore.delete``), never a container.
REMOVING_PREFIX = ".removing-"
_HEX_DIGITS = frozenset("0123456789abcdef")
#: At most this many parsed records kept per store (then it starts afresh).
_PARSED_MAX = 4096


def is_container_id(text: str) -> bool:
    """Whether ``text`` is a container id: 64 lowercase hex digits."""
    return len(text) == 64 and set(text) <= _HEX_DIGITS


# config.NAME_PATTERN and NAME_MAX (not imported: the monitor runs without pydantic).
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
NAME_MAX = 128
_INT_FIELDS = (
    "pid", "pid_start_time", "exit_code", "monitor_pid", "monitor_start_time", "signal",
    "restart_count",
)  # fmt: skip
_TIME_FIELDS = ("created_at", "started_at", "finished_at")


def _damaged(path: Path, reason: str) -> DamagedRecordError:
    return DamagedRecordError(
        f"damaged container record {path}: {printable(reason, 200)}",
        path=str(path),
        hint=f"`codex32 rm -f {path.parent.name}` removes it",
    )


def _is_cgroup_of(path: object, container_id: str) -> bool:
    """A cgroup directory named by the id (the engine ``rmdir``s these paths)."""
    return (
        isinstance(path, str)
        and os.path.isabs(path)
        and os.path.basename(path) == container_id
        and ".." not in path.split("/")
    )


def _checked_record(data: object, container_id: str, path: Path) -> ContainerRecord:
    """``data`` as a record, if it is one and it is this directory's."""
    if not isinstance(data, dict):
        raise _damaged(path, f"a JSON {type(data).__name__}, not an object")
    if data.get("id") != container_id:
        raise _damaged(path, f"its id {data.get('id')!r} is not its directory's name")
    name = data.get("name")
    if not isinstance(name, str) or len(name) > NAME_MAX or not _NAME.match(name):
        raise _damaged(path, f"its name {name!r} is not a container name")
    for key in _INT_FIELDS:
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _damaged(path, f"{key} {value!r} is not a number")
    for key in _TIME_FIELDS:
        value = data.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _damaged(path, f"{key} {value!r} is not a time")
    cgroups = data.get("cgroup_paths", {})
    if not isinstance(cgroups, dict) or not all(
        _is_cgroup_of(p, container_id) for p in cgroups.values()
    ):
        raise _damaged(path, "its cgroup paths are not this container's")
    try:
        return ContainerRecord.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"missing or invalid fields ({type(exc).__name__}: {exc})") from None


def _copy(record: ContainerRecord) -> ContainerRecord:
    """A record the caller may change (``update`` does) without changing the cached one."""
    clone = object.__new__(ContainerRecord)
    clone.__dict__.update(record.__dict__)
    clone.cgroup_paths = dict(record.cgroup_paths)
    clone.warnings = list(record.warnings)
    return clone


def _is_id_prefix(text: str) -> bool:
    """Whether ``text`` could start a container id (64 lowercase hex digits)."""
    return 0 < len(text) <= 64 and set(text) <= _HEX_DIGITS


def _scandir(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid, it names one process for sure.

    Raw ``os`` calls (no file object): ``ps`` of N containers reads 2N of these.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # a few hundred bytes
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        fields = data.rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X"):
            return None  # exited, not yet reaped: not running any more
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_same_process(pid: int | None, start_time: int | None) -> bool:
    """Whether ``pid`` is still the process recorded (guards against pid reuse)."""
    return pid is not None and start_time is not None and process_start_time(pid) == start_time


def is_durable_change(before: ContainerRecord | None, after: ContainerRecord) -> bool:
    """Whether writing ``after`` over ``before`` must survive a power cut (fsync).

    Durable: the create (``before`` is None: the container exists), a new outcome (an
    exit, a failed start: what ``ps -a`` and ``inspect`` show after a reboot), and the
    user's stop or start (``stopped_by_user``, which restart policies obey at
    ``recover``). Not durable: everything about processes and cgroups (running, pids,
    start times, cgroup paths, OOM marks, restarting), since a reboot takes those away
    and ``refresh`` finds a live record without its processes lost; nor the exit of an
    ``--rm`` container its monitor removes next: lost, ``recover`` removes it the same.
    A lost write leaves the file before it, whole (the rename is atomic); a torn file
    (a filesystem that renames before it writes) is a ``DamagedRecordError``.
    """
    if before is None:
        return True
    if after.stopped_by_user != before.stopped_by_user:
        return True
    outcome = (after.status is ContainerState.EXITED, after.exit_code, after.error,
               after.finished_at)  # fmt: skip
    previous = (before.status is ContainerState.EXITED, before.exit_code, before.error,
                before.finished_at)  # fmt: skip
    if after.exit_code is None or outcome == previous:
        return False  # no new outcome (a start clears the last one)
    return not (after.auto_remove and not after.keep_after_exit)


def write_json_atomic(path: Path, data: Any, *, fsync: bool = True, commit: bool = False) -> None:
    """``write_text_atomic`` of ``data`` as compact JSON (the C encoder: ``indent=`` is
    pure Python), its modification time stamped to the nanosecond (the kernel's may be a
    clock tick old): (inode, mtime, size) then names one write, for caches of the
    parsed file (``StateStore.load``), even when an inode number comes back."""
    write_text_atomic(path, json.dumps(data), fsync=fsync, commit=commit, stamp=True)


def write_text_atomic(
    path: Path, text: str, *, fsync: bool = True, commit: bool = False, stamp: bool = False
) -> None:
    """Write to a temp file in the same directory (``mkstemp``: 0600 from its creation
    on) and rename it over ``path``.

    ``fsync``: the data reach the disk before the rename (a power cut leaves the old
    file or the new one); ``commit``: the directory too, after the rename, so that the
    new file itself survives a power cut (a durable record); ``stamp``: the
    modification time set to now, to the nanosecond.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if stamp:
                now = time.time_ns()
                os.utime(f.fileno(), ns=(now, now))
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if commit:
        fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make the entries of ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(exc: OSError, path: Path | str) -> ContainerError:
    """A write under the storage directory failed (a full disk, most often): one line
    naming the file and what to do, instead of a bare OSError."""
    return ContainerError(
        "cannot write the engine's records", errno=exc.errno, path=str(path),
        hint="free space on the storage directory's disk (or fix its permissions), then retry",
    )  # fmt: skip


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if need be), held for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class StateStore:
    """Container directories and the name index under the storage directory."""

    def __init__(self, storage_dir: Path, group: int = 0) -> None:
        """``group``: the host gid of a STRICT container's root, the one other id that
        may traverse the storage tree (``ensure_layout``)."""
        self.group = group
        self.root = storage_dir
        self.containers = storage_dir / "containers"
        self.names = storage_dir / "names"
        self._layout_ready = False
        #: id -> (the file's (inode, mtime, size), its record, checked): ``ps`` of N
        #: containers parses only the records that changed since the last one.
        self._parsed: dict[str, tuple[tuple[int, int, int], ContainerRecord]] = {}

    def ensure_layout(self) -> None:
        """Create the storage tree, closed to every host user but root and ``group``.

        The root and ``containers/`` are 0710 root:``group`` (Docker's layout under
        userns-remap): a STRICT container's root (host uid and gid ``group``) may
        traverse them to its layers, no one else may enter, so nothing below (a
        setuid file a container planted in its upper layer, a plan's secrets) is
        reachable whatever its own mode. ``names/`` is root's alone.
        Once per store while the tree stays (every create asks).
        """
        if self._layout_ready and self.names.is_dir() and self.containers.is_dir():
            return
        for path in (self.root, self.containers, self.names):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.root, self.containers):
            os.chown(path, 0, self.group)
            os.chmod(path, 0o710)
        os.chmod(self.names, 0o700)
        self._layout_ready = True

    def directory(self, container_id: str) -> Path:
        """A container's directory."""
        return self.containers / container_id

    def reserve_name(self, name: str, container_id: str) -> None:
        """Claim ``name`` for ``container_id``; a taken name is a clear error."""
        try:
            with self._names_lock():
                os.symlink(f"../containers/{container_id}", self.names / name)
        except FileExistsError:
            raise ConfigError(
                f"the container name {name!r} is already in use",
                hint="remove that container first (codex32 rm), or choose another --name",
            ) from None

    def release_name(self, name: str, container_id: str) -> None:
        """Forget a name if it still names ``container_id`` (idempotent).

        The check matters when two parties remove one container (an ``--rm`` monitor
        and ``rm --force``): the later one must not take the name from a new container.
        """
        link = self.names / name
        with self._names_lock(), contextlib.suppress(OSError):
            # Under the lock: no new container can take the name between the check
            # and the unlink.
            if os.path.basename(os.readlink(link)) == container_id:
                os.unlink(link)

    def _names_lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / "names.lock")

    @contextlib.contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        """The lock on state.json: held for a read-change-write, never longer."""
        with self._flock(container_id, "state.lock"):
            yield

    @contextlib.contextmanager
    def operation(self, container_id: str) -> Iterator[None]:
        """The lock on verbs (start, stop, remove): two callers never interleave them.

        A separate file from the state lock, because the monitor writes state while
        a ``start`` holds this one.
        """
        with self._flock(container_id, "operation.lock"):
            yield

    @contextlib.contextmanager
    def _flock(self, container_id: str, name: str) -> Iterator[None]:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(file_lock(self.directory(container_id) / name))
            except FileNotFoundError:
                raise ContainerNotFoundError(f"no such container: {container_id}") from None
            yield

    def creation_under_way(self, container_id: str) -> bool:
        """Whether a container without ``state.json`` is still being created.

        ``create`` holds the operation lock from just after its ``mkdir`` until the
        state is written; a lock file not made yet (that instant) counts as under way
        while the directory is young.
        """
        directory = self.directory(container_id)
        try:
            fd = os.open(directory / "operation.lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                return time.time() - directory.stat().st_mtime < _CREATION_GRACE
            except FileNotFoundError:
                return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def drop_dangling_names(self) -> list[str]:
        """Unlink names whose container directory is gone (under the names lock)."""
        dropped = []
        with self._names_lock():
            for link in self.names.iterdir():
                if link.is_symlink() and not link.exists():
                    link.unlink()
                    dropped.append(link.name)
        return dropped

    def update(
        self,
        container_id: str,
        change: Callable[[ContainerRecord], None],
        *,
        durable: bool | None = None,
    ) -> ContainerRecord:
        """Read, change and write state.json under the container's lock.

        ``durable`` None: fsync'd if the change is one to keep (``is_durable_change``).
        """
        with self.locked(container_id):
            record = self.load(container_id)
            before = replace(record)  # (the fields compared are immutable)
            change(record)
            if durable is None:
                durable = is_durable_change(before, record)
            self.save(record, durable=durable)
            return record

    def save(self, record: ContainerRecord, *, durable: bool = True) -> None:
        """Write state.json atomically (the old one stays whole if this fails);
        ``durable``: fsync'd, file and directory."""
        path = self.directory(record.id) / "state.json"
        try:
            write_json_atomic(path, record.to_dict(), fsync=durable, commit=durable)
        except OSError as exc:
            raise storage_error(exc, path) from exc

    def save_created(self, record: ContainerRecord) -> None:
        """Write a new container's state.json, its last file, durable: the create is
        then kept whole or not at all (``reconcile`` removes a directory without
        state.json). Its other files were fsync'd before; the directory's fsync commits
        their renames, and the journal (ext4, xfs) commits in order, so the directory's
        own entry in ``containers/`` with them."""
        self.save(record, durable=True)

    def save_config(
        self, container_id: str, config: dict[str, Any], *, durable: bool = True
    ) -> None:
        """Write config.json atomically; ``durable``: its data fsync'd (``save_created``
        commits it)."""
        path = self.directory(container_id) / "config.json"
        try:
            write_json_atomic(path, config, fsync=durable)
        except OSError as exc:
            raise storage_error(exc, path) from exc

    def load(self, container_id: str) -> ContainerRecord:
        """Read state.json; a record that cannot be trusted is a ``DamagedRecordError``.

        Nothing of the file is used before it is checked: the engine builds paths
        from the id and the name, removes the cgroup paths and signals the pids.
        """
        path = self.directory(container_id) / "state.json"
        if not is_container_id(container_id):
            if "/" in container_id or container_id in ("", ".", "..") or not path.exists():
                raise ContainerNotFoundError(f"no such container: {container_id}")
            raise _damaged(path, "its directory's name is not a container id")
        known = self._parsed.get(container_id)
        if known is not None:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._parsed.pop(container_id, None)
                raise ContainerNotFoundError(f"no such container: {container_id}") from None
            except OSError:
                st = None
            if st is not None and (st.st_ino, st.st_mtime_ns, st.st_size) == known[0]:
                return _copy(known[1])  # unchanged since parsed (``write_json_atomic``)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())  # the key of what is read, not of the path
                data = json.loads(f.read())
        except FileNotFoundError:
            self._parsed.pop(container_id, None)
            raise ContainerNotFoundError(f"no such container: {container_id}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise _damaged(path, f"not valid JSON ({exc})") from None
        except OSError as exc:
            raise _damaged(path, f"unreadable ({exc.strerror})") from None
        record = _checked_record(data, container_id, path)
        if len(self._parsed) >= _PARSED_MAX:
            self._parsed.clear()
        self._parsed[container_id] = ((st.st_ino, st.st_mtime_ns, st.st_size), record)
        return _copy(record)

    def load_config(self, container_id: str) -> dict[str, Any]:
        """Read config.json."""
        data: dict[str, Any] = json.loads(
            (self.directory(container_id) / "config.json").read_text()
        )
        return data

    def resolve(self, name_or_id: str) -> str:
        """The id of a container given its name, its id, or a unique id prefix."""
        link = self.names / name_or_id
        try:
            if "/" not in name_or_id and "\0" not in name_or_id and link.is_symlink():
                return os.path.basename(os.readlink(link))
        except OSError:  # a name too long for a file (ENAMETOOLONG) is no name of ours
            pass
        whole_id = len(name_or_id) == 64 and _is_id_prefix(name_or_id)
        if whole_id and (self.containers / name_or_id).is_dir():  # no listing of all
            return name_or_id
        if _is_id_prefix(name_or_id):
            # Ids are hex: anything else (a glob pattern among them) is no id prefix.
            matches = [
                entry.name
                for entry in _scandir(self.containers)
                if entry.name.startswith(name_or_id) and entry.is_dir()
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ContainerNotFoundError(
                    f"{name_or_id!r} matches {len(matches)} containers", hint="give more of the id"
                )
        raise ContainerNotFoundError(
            f"no such container: {name_or_id}", hint="see `codex32 ps -a` for the containers"
        )

    def ids(self) -> list[str]:
        """Every container with a state file."""
        found = []
        for entry in _scandir(self.containers):  # (not a glob: 2.1 -> 1.2 ms at 500)
            if not entry.name.startswith(".") and os.path.isfile(
                os.path.join(entry.path, "state.json")
            ):
                found.append(entry.name)
        listed = set(found)
        for gone in [cid for cid in self._parsed if cid not in listed]:
            self._parsed.pop(gone, None)  # removed by another process (an --rm monitor)
        return sorted(found)

    def delete(self, record: ContainerRecord) -> None:
        """Remove the name and the whole directory.

        The directory is first renamed out of the way (one atomic step), then removed:
        a removal killed half-way leaves a ``.removing-ID`` that ``reconcile`` removes,
        not a directory without state that looks like a create under way.
        """
        self.release_name(record.name, record.id)
        self._parsed.pop(record.id, None)
        doomed = self.containers / f"{REMOVING_PREFIX}{record.id}"
        try:
            os.rename(self.directory(record.id), doomed)
        except FileNotFoundError:
            return
        except OSError:
            doomed = self.directory(record.id)
        shutil.rmtree(doomed, ignore_errors=True)

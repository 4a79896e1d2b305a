"""Everything one bench run creates, and the clean-up of all of it (even on failure).

``Bench`` owns: a private storage directory (0711) with the busybox template built
in it, OCI bundles and crun/runc state directories, two timing servers (one on the
host, one inside crun's cgroup namespace), the engines, the host service
(``codex32 serve`` on that storage, ``service.py``), and two cgroup parents
beneath the bench's own cgroups (one for Codex-32, one for crun and runc). Closing
it removes the containers (Codex-32's, crun's, runc's), stops the servers, removes
the cgroups and deletes the directories.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import anchors, host, oci
from .service import HostService

SPAWNER = Path(__file__).resolve().parent / "spawner.py"
CGROUPNS = Path(__file__).resolve().parent / "cgroupns.sh"
TEMPLATE = "busybox"
#: Names the engine gives its bridges and its nftables table.
NETWORK_PREFIXES = ("codex32", "c32br")


class BenchError(RuntimeError):
    """The bench cannot run here (a missing tool, no root...)."""


@dataclass(frozen=True)
class Timed:
    """One command timed by a spawner (monotonic ns)."""

    start: int
    end: int
    rc: int
    err: str

    @property
    def ns(self) -> int:
        return self.end - self.start


class Spawner:
    """Client of ``spawner.py`` (one JSON line per request and per reply)."""

    def __init__(
        self, prefix: list[str], env: dict[str, str], name: str, *, subreaper: bool = False
    ) -> None:
        self.name = name
        argv = [*prefix, sys.executable, "-S", str(SPAWNER)]
        if subreaper:
            argv.append("--subreaper")
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1
        )

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        stdin: IO[str] | None = self._proc.stdin
        stdout: IO[str] | None = self._proc.stdout
        if stdin is None or stdout is None:
            raise BenchError(f"the {self.name} timing server has no pipes")
        stdin.write(json.dumps(payload) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise BenchError(f"the {self.name} timing server died (status {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"{self.name} timing server: {reply['error']}")
        return reply

    def run(
        self, argvs: list[list[str]], idle: float = 0.0, env: dict[str, str] | None = None
    ) -> list[Timed]:
        reply = self.request({"op": "run", "argvs": argvs, "idle": idle, "env": env or {}})
        return [Timed(r["start"], r["end"], r["rc"], r["err"]) for r in reply["runs"]]

    def batch(
        self, argvs: list[list[str]], pidfiles: list[str] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        return self.request(
            {"op": "batch", "argvs": argvs, "pidfiles": pidfiles or [], "timeout": timeout}
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, BenchError, ValueError):
                self.request({"op": "exit"})
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BenchError(f"{tool} is not installed (apt-get install crun runc bubblewrap)")
    return path


class Bench:
    """The resources of one run; use as a context manager."""

    def __init__(self, storage: Path | None = None) -> None:
        if os.geteuid() != 0:
            raise BenchError("the bench needs root (namespaces, mounts, cgroups)")
        self.crun = _require("crun")
        self.runc = shutil.which("runc")
        self.bwrap = shutil.which("bwrap")
        self.unshare = _require("unshare")
        self.tag = f"c32bench-{os.getpid()}"
        self.codex32_cgroup = self.tag  # CODEX32_CGROUP_PARENT
        self.oci_cgroup = f"{self.tag}-oci"
        self.attach_cgroup = f"{self.tag}-attach"  # cgroup_attach's
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        os.chmod(self.tmp, 0o711)
        self.own_storage = storage is None
        self.storage = storage if storage is not None else self.tmp / "storage"
        self.storage.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.storage, 0o711)
        self.crun_root = self.tmp / "crun-state"
        self.runc_root = self.tmp / "runc-state"
        self.bundles = self.tmp / "bundles"
        self._engines: list[Any] = []
        self._spawners: list[Spawner] = []
        self._counter = 0
        self.rootfs = ""
        self.seccomp: dict[str, Any] | None = None
        # The engine reads its settings from the environment; the CLI inherits them.
        os.environ["CODEX32_STORAGE_DIR"] = str(self.storage)
        os.environ["CODEX32_CGROUP_PARENT"] = self.codex32_cgroup
        # Settings of the caller's environment that would change what is measured: an
        # isolation default, a service the CLI rows would go through, and
        # PYTHONDONTWRITEBYTECODE (set on the development
        # machines), which makes every fresh interpreter compile codex32 from source
        # whenever its bytecode is stale, as it is right after an edit.
        for name in ("CODEX32_ISOLATION_LEVEL", "CONTAINER_ISOLATION_LEVEL", "CODEX32_HOST",
                     "PYTHONDONTWRITEBYTECODE"):  # fmt: skip
            os.environ.pop(name, None)
        sys.dont_write_bytecode = False
        self.env = dict(os.environ)
        self.host: Spawner | None = None
        self.ns: Spawner | None = None
        self._links_before = host.net_links()
        self._tables_before = host.nft_tables()
        self.removed_network_state: list[str] = []
        self.podman: anchors.Podman | None = anchors.Podman(self.tmp, f"{self.tag}-podman")
        self.docker: anchors.Docker | None = anchors.Docker(self.tmp, f"{self.tag}-docker")
        self.service: HostService | None = HostService(self.tmp)

    # -- set-up ------------------------------------------------------------------

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, log: Callable[[str], None]) -> None:
        """Build the template, write the bundles, start the timing servers."""
        engine = self.engine(fork_server=False)
        image = engine.images.get(TEMPLATE)
        if not image.built:
            log(f"building the {TEMPLATE} template in {self.storage}")
            image = engine.images.build(TEMPLATE, quiet=True)
        self.rootfs = str(image.path)
        self.seccomp = oci.codex32_seccomp()
        for directory in (self.crun_root, self.runc_root, self.bundles):
            directory.mkdir(mode=0o700, exist_ok=True)
        self.host = self._spawner([], "host")
        self.ns = self._spawner(
            [self.unshare, "--mount", "--cgroup", "--propagation", "private", "--",
             "/bin/sh", str(CGROUPNS)],
            "crun namespace", subreaper=True,
        )  # fmt: skip
        assert self.service is not None
        try:
            log(f"starting codex32 serve on {self.service.socket}")
            self.service.start(self.storage, self.env)
        except Exception as exc:  # its rows are left out, the run goes on
            log(f"the host service left out: {exc}")
            for problem in self.service.close():
                log(f"service: {problem}")
            self.service = None
        for name in ("podman", "docker"):
            anchor = getattr(self, name)
            try:
                log(f"preparing {name} (its own storage under {self.tmp})")
                anchor.prepare(self.rootfs)
            except Exception as exc:  # its rows are left out, the run goes on
                log(f"{name} left out: {exc}")
                problems = anchor.close()
                for problem in problems:
                    log(f"{name}: {problem}")
                setattr(self, name, None)

    def _spawner(self, prefix: list[str], name: str, *, subreaper: bool = False) -> Spawner:
        spawner = Spawner(prefix, self.env, name, subreaper=subreaper)
        self._spawners.append(spawner)
        spawner.run([["/bin/true"]])  # fails here, not mid-measurement, if it cannot start
        return spawner

    def engine(self, *, fork_server: bool = True, sandbox_pool: int = 0) -> Any:
        """A new ContainerEngine on the bench's storage (closed by ``close``)."""
        from codex32 import ContainerEngine

        if self.supports_sandbox_pool():
            engine = ContainerEngine(
                self.storage, fork_server=fork_server, sandbox_pool=sandbox_pool
            )
        elif self.supports_fork_server():
            engine = ContainerEngine(self.storage, fork_server=fork_server)
        else:
            engine = ContainerEngine(self.storage)
        self._engines.append(engine)
        return engine

    def close_engines(self) -> None:
        """Close the engines made so far (their fork servers exit; containers stay)."""
        for engine in self._engines:
            with contextlib.suppress(Exception):
                engine.close()
        self._engines.clear()

    @staticmethod
    def supports_sandbox_pool() -> bool:
        from codex32 import ContainerEngine

        return "sandbox_pool" in inspect.signature(ContainerEngine).parameters

    @staticmethod
    def supports_fork_server() -> bool:
        from codex32 import ContainerEngine

        return "fork_server" in inspect.signature(ContainerEngine).parameters

    @staticmethod
    def supports_network_option() -> bool:
        from codex32 import ContainerConfig

        return "network" in ContainerConfig.model_fields

    def next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{self.tag}-{prefix}-{self._counter}"

    def bundle(self, name: str, args: list[str], *, seccomp: bool = True) -> Path:
        """An OCI bundle whose container goes to cgroup ``<oci parent>/<name>``."""
        config = oci.make_config(
            self.rootfs,
            args,
            cgroups_path=f"{self.oci_cgroup}/{name}",
            seccomp=self.seccomp if seccomp else None,
        )
        return oci.write_bundle(self.bundles / name, config)

    def crun_argv(self, *args: str) -> list[str]:
        return [self.crun, "--root", str(self.crun_root), *args]

    def runc_argv(self, *args: str) -> list[str]:
        assert self.runc is not None
        return [self.runc, "--root", str(self.runc_root), *args]

    def containers_dir(self) -> Path:
        return self.storage / "containers"

    def wait_removed(self, timeout: float = 15.0) -> int | None:
        """Monotonic ns at which the storage holds no container any more (None: timeout)."""
        directory = self.containers_dir()
        deadline = time.monotonic() + timeout
        while True:
            try:
                empty = not any(directory.iterdir())
            except FileNotFoundError:
                empty = True
            if empty:
                return time.monotonic_ns()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)

    # -- clean-up -----------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove everything the run created; return what could not be removed."""
        problems: list[str] = []
        if self.service is not None:  # first: no container starts through it any more
            problems += self.service.close()
        problems += self._remove_codex32_containers()
        self.close_engines()
        problems += self._remove_oci_containers()
        for anchor in (self.podman, self.docker):
            if anchor is not None:
                problems += anchor.close()
        anchors.unmount_under(self.tmp)
        for spawner in self._spawners:
            spawner.close()
        self._spawners.clear()
        self.removed_network_state = host.remove_new_network_state(
            self._links_before, self._tables_before, NETWORK_PREFIXES
        )
        left = host.remove_cgroup_trees(
            [
                self.codex32_cgroup,
                self.oci_cgroup,
                self.attach_cgroup,
                f"{self.tag}-podman",
                f"{self.tag}-docker",
            ]
        )
        problems += [f"cgroup {path} is still there" for path in left]
        # A monitor appends its last event ("destroy") just after it removed its
        # container, and that append creates the storage directory again if it is
        # gone: remove until nothing comes back for a while.
        target = self.tmp if self.own_storage else self.containers_dir()
        quiet_since = time.monotonic()
        deadline = quiet_since + 10
        while time.monotonic() < deadline:
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                break
            time.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.tmp.exists() or target.exists():
            problems.append(f"{target} is still there")
        return problems

    def _remove_codex32_containers(self) -> list[str]:
        if not self.containers_dir().is_dir():
            return []
        try:
            from codex32 import ContainerEngine

            engine = ContainerEngine(self.storage)
        except Exception as exc:
            return [f"cannot open the engine to remove containers: {exc}"]
        problems = []
        try:
            for container in engine.containers.list(all=True):
                try:
                    container.remove(force=True)
                except Exception as exc:
                    problems.append(f"container {container.id[:12]}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                engine.close()
        return problems

    def _remove_oci_containers(self) -> list[str]:
        problems = []
        for root, argv_of, ns in (
            (self.crun_root, self.crun_argv, True),
            (self.runc_root, self.runc_argv if self.runc else None, False),
        ):
            if argv_of is None or not root.is_dir():
                continue
            for state in root.iterdir():
                if not state.is_dir():
                    continue
                argv = argv_of("delete", "--force", state.name)
                if ns:  # crun must see the same cgroup view as when it created it
                    argv = [self.unshare, "--mount", "--cgroup", "--propagation", "private",
                            "--", "/bin/sh", str(CGROUPNS), *argv]  # fmt: skip
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode != 0 and state.exists():
                    problems.append(f"{argv[-1]}: {result.stderr.strip()}")
        return problems

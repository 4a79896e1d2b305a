"""The CLI through the host service (``codex32 --host unix:///run/codex32/codex32.sock``).

As ``podman --remote``: every verb calls the service's REST and WebSocket API instead
of the engine in-process, through objects shaped as the engine's (``containers``,
``images``, ``networks``, ``events``, ``Container`` handles), so the CLI's commands
and output stay the same. Errors come back as the engine's own classes, rebuilt from
the answer's kind, message and hint, so they print the same line with the same exit
code. ``tcp://HOST:PORT`` (or ``https://``) needs ``CODEX32_TOKEN``.

Not remote: ``run -i``/``-t`` (stdin and the terminal belong to the container's
monitor on the service's side); ``exec -it`` is remote, over the WebSocket.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import codex32
from codex32 import Codex32Error, ConfigError, LaunchError
from codex32.cli._http import Connection, Response, TransportError

if TYPE_CHECKING:
    from codex32 import ContainerConfig, ContainerImage

API = "/api/v1"


class _Plan:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def describe(self) -> str:
        return json.dumps(self._data, indent=2)


def _error(response: Response) -> Exception:
    """The engine's exception for an error answer (the same line as in-process)."""
    try:
        body = response.json()
        message, kind, hint = str(body["message"]), str(body.get("kind")), body.get("hint")
    except (ValueError, KeyError, TypeError):
        return Codex32Error(f"the service answered {response.status_code}: {response.text[:200]}")
    if kind == "Timeout":
        return TimeoutError(message)
    if kind == "LaunchError":
        return LaunchError(message, exit_code=int(body.get("exit_code") or 125), hint=hint)
    cls = getattr(codex32, kind, None)
    if kind == "CgroupError":
        from codex32.errors import CgroupError

        cls = CgroupError
    if isinstance(cls, type) and issubclass(cls, Codex32Error):
        return cls(message, hint=hint)
    return Codex32Error(message, hint=hint)


class Client:
    """HTTP to the service: unix socket or TCP (bearer token), answers checked."""

    def __init__(self, host: str) -> None:
        headers = {}
        if host.startswith("unix://"):
            path = host[len("unix://") :]
            self.connection = Connection(unix_path=path)
            self.base = "http://codex32"
            self.ws_base = "ws://codex32"
            self.unix_path: str | None = path
        elif host.startswith(("tcp://", "http://", "https://")):
            scheme = "https" if host.startswith("https://") else "http"
            address = host.split("://", 1)[1].rstrip("/")
            self.base = f"{scheme}://{address}"
            self.ws_base = f"{'wss' if scheme == 'https' else 'ws'}://{address}"
            self.unix_path = None
            token = os.environ.get("CODEX32_TOKEN")
            if token:
                headers["Authorization"] = f"Bearer {token}"
            self.connection = Connection(address=address, tls=scheme == "https", headers=headers)
        else:
            raise ConfigError(
                f"--host {host!r}: use unix:///path/to.sock or tcp://HOST:PORT",
            )
        self.headers = headers
        self.host = host

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Response:
        try:
            response = self.connection.request(method, API + path, params=params, json_body=json)
        except TransportError as exc:
            raise ConfigError(
                f"cannot reach the service at {self.host}: {exc}",
                hint="is codex32 serve running? (or drop --host / CODEX32_HOST)",
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, *, params: dict[str, Any] | None = None
    ) -> Iterator[Response]:
        try:
            with self.connection.open(method, API + path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield response
        except TransportError as exc:
            raise ConfigError(f"cannot reach the service at {self.host}: {exc}") from None


class RemoteContainer:
    """A container handle whose verbs are requests (``Container``'s shape)."""

    def __init__(self, client: Client, inspected: dict[str, Any]) -> None:
        from codex32 import ContainerRecord

        self._client = client
        self._inspected = inspected
        self.record = ContainerRecord.from_dict(inspected["State"])

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def short_id(self) -> str:
        return self.record.id[:12]

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> Any:
        return self.record.status

    @property
    def status(self) -> str:
        return self.record.status.value

    @property
    def config(self) -> ContainerConfig:
        from codex32 import ContainerConfig

        return ContainerConfig.model_validate(self._inspected["Config"], context={"stored": True})

    def network_settings(self) -> dict[str, object]:
        settings: dict[str, object] = self._inspected["NetworkSettings"]
        return settings

    def reload(self) -> None:
        fresh = self._client.request("GET", f"/containers/{self.id}").json()
        self.__init__(self._client, fresh)  # type: ignore[misc]

    def _verb(self, verb: str, **params: Any) -> None:
        params = {k: v for k, v in params.items() if v is not None}
        self._client.request("POST", f"/containers/{self.id}/{verb}", params=params)

    def start(self) -> None:
        self._verb("start")

    def stop(self, timeout: float | None = None) -> None:
        self._verb("stop", timeout=timeout)

    def kill(self, signal_: str | int = "SIGKILL") -> None:
        self._verb("kill", signal=str(signal_))

    def restart(self, timeout: float | None = None) -> None:
        self._verb("restart", timeout=timeout)

    def pause(self) -> None:
        self._verb("pause")

    def unpause(self) -> None:
        self._verb("unpause")

    def remove(self, *, force: bool = False) -> None:
        self._client.request("DELETE", f"/containers/{self.id}", params={"force": force})

    def wait(self, timeout: float | None = None) -> int:
        params = {"timeout": timeout} if timeout is not None else {}
        try:
            answer = self._client.request("POST", f"/containers/{self.id}/wait", params=params)
        except codex32.ContainerNotFoundError:
            # An --rm container removed as it ended: its die event has the code.
            return _exit_code_from_events(self._client, self.id, self.record.created_at)
        code: int = answer.json()["exit_code"]
        return code

    def stats(self) -> Any:
        from codex32 import ContainerStats

        data = self._client.request("GET", f"/containers/{self.id}/stats").json()
        data.pop("cpu_percent", None)
        return ContainerStats(**data)

    def top(self) -> list[dict[str, object]]:
        processes: list[dict[str, object]] = self._client.request(
            "GET", f"/containers/{self.id}/top"
        ).json()["processes"]
        return processes

    def stream_logs(
        self,
        *,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = True,
    ) -> Iterator[Any]:
        from codex32 import LogEntry, parse_since

        params: dict[str, Any] = {"format": "json", "follow": follow}
        if tail is not None:
            params["tail"] = tail
        if since is not None:
            params["since"] = repr(since)
        with self._client.stream("GET", f"/containers/{self.id}/logs", params=params) as r:
            for line in r.iter_lines():
                if not line:
                    continue
                data = json.loads(line)
                when = parse_since(data["time"], 0.0)
                yield LogEntry(when, data["time"], data["stream"], data["log"])

    def exec_run(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        tty: bool = False,
    ) -> Any:
        from codex32 import ExecResult

        if stdin is None and not tty:
            body = {"command": command, "env": env or {}, "user": user, "workdir": workdir}
            result = self._client.request("POST", f"/containers/{self.id}/exec", json=body).json()
            write_all(stdout, result["stdout"].encode())
            write_all(stderr, result["stderr"].encode())
            return ExecResult(result["exit_code"])
        from codex32.cli._remote_exec import interactive_exec

        code = interactive_exec(self._client, self.id, command, env or {}, user, workdir,
                                 stdin, stdout, tty)  # fmt: skip
        return ExecResult(code)

    def export(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.codex32-tmp")
        try:
            with (
                self._client.stream("GET", f"/containers/{self.id}/export") as response,
                open(tmp, "wb") as out,
            ):
                for chunk in response.iter_bytes():
                    out.write(chunk)
            os.replace(tmp, target)
        except OSError as exc:
            raise codex32.ContainerError(
                f"cannot write the export to {target}", container=self.name, step="export",
                errno=exc.errno, hint="check that the folder exists and is writable",
            ) from exc  # fmt: skip
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def write_all(fd: int | None, data: bytes) -> None:
    if fd is None or not data:
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _exit_code_from_events(client: Client, container_id: str, since: float | None) -> int:
    params: dict[str, Any] = {"follow": False,
                              "filter": [f"container={container_id}", "event=die"]}  # fmt: skip
    if since is not None:
        params["since"] = repr(since)
    code = None
    for line in client.request("GET", "/events", params=params).text.splitlines():
        with contextlib.suppress(KeyError, ValueError):
            code = int(json.loads(line)["attributes"]["exitCode"])
    if code is None:
        raise codex32.ContainerNotFoundError(f"no such container: {container_id}")
    return code


def run_attached(
    client: Client,
    config: dict[str, Any],
    *,
    stdout: int | None,
    stderr: int | None,
    forward_signals: bool,
) -> tuple[int, str]:
    """Create and start ``config`` (a ``ContainerConfig`` as JSON), follow its output,
    wait: (exit code, container id).

    ``--rm`` is done by this client once the exit code is known (as Docker's CLI did
    before 1.13), so that a quick container's output and exit code cannot go with it;
    SIGINT while following is passed to the container (Docker's sig-proxy).
    """
    remove = bool(config.get("auto_remove"))
    created = client.request(
        "POST", "/containers", params={"start": True}, json={**config, "auto_remove": False}
    ).json()
    container_id: str = created["id"]
    try:
        printed = 0  # a follow begun again (after a SIGINT) skips what was shown
        while True:
            try:
                for index, (stream, text) in enumerate(_follow_logs(client, container_id), 1):
                    if index > printed:
                        write_all(stderr if stream == "stderr" else stdout, text.encode())
                        printed = index
                break
            except KeyboardInterrupt:
                if not forward_signals:
                    raise
                with contextlib.suppress(Codex32Error):
                    client.request(
                        "POST", f"/containers/{container_id}/kill", params={"signal": "SIGINT"}
                    )
        code = _wait(client, container_id)
    finally:
        if remove:
            with contextlib.suppress(Codex32Error):
                client.request("DELETE", f"/containers/{container_id}", params={"force": True})
    return code, container_id


def _follow_logs(client: Client, container_id: str) -> Iterator[tuple[str, str]]:
    """(stream, text) of each log entry, until the container's output ends."""
    params = {"format": "json", "follow": True}
    with client.stream("GET", f"/containers/{container_id}/logs", params=params) as response:
        for line in response.iter_lines():
            if line:
                data = json.loads(line)
                yield data["stream"], data["log"]


def _wait(client: Client, container_id: str) -> int:
    try:
        answer = client.request("POST", f"/containers/{container_id}/wait")
    except codex32.ContainerNotFoundError:
        # Removed by someone else as it ended: its die event has the code.
        return _exit_code_from_events(client, container_id, None)
    code: int = answer.json()["exit_code"]
    return code


class RemoteContainers:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, name_or_id: str) -> RemoteContainer:
        return RemoteContainer(
            self._client, self._client.request("GET", f"/containers/{name_or_id}").json()
        )

    def damaged(self) -> tuple[codex32.DamagedRecordError, ...]:
        rows = self._client.request("GET", "/containers/_damaged").json()
        return tuple(codex32.DamagedRecordError(r["message"], path=r["path"]) for r in rows)

    def list(self, *, all: bool = False) -> list[RemoteContainer]:
        rows = self._client.request("GET", "/containers", params={"all": all}).json()
        found = []
        for row in rows:
            with contextlib.suppress(codex32.ContainerNotFoundError):
                found.append(self.get(row["id"]))
        return found

    def _create(self, config: ContainerConfig, start: bool) -> RemoteContainer:
        created = self._client.request(
            "POST",
            "/containers",
            params={"start": start},
            json=config.model_dump(mode="json", exclude_unset=True),
        ).json()
        return self.get(created["id"])

    def create(self, config: ContainerConfig) -> RemoteContainer:
        return self._create(config, start=False)

    def run_detached(self, config: ContainerConfig) -> RemoteContainer:
        return self._create(config, start=True)

    def run(
        self,
        config: ContainerConfig,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        forward_signals: bool = False,
    ) -> Any:
        """Attached run without stdin (``run_attached``)."""
        from codex32 import RunResult

        if stdin is not None or config.tty:
            raise ConfigError(
                "run -i/-t is not available through --host (stdin and the terminal are "
                "the container monitor's, on the service's side)",
                hint="use run -d and exec -it, or run without --host",
            )
        body = config.model_dump(mode="json", exclude_unset=True)
        code, container_id = run_attached(
            self._client, body, stdout=stdout, stderr=stderr, forward_signals=forward_signals
        )
        return RunResult(code, container_id=container_id)

    def prune(self) -> builtins.list[str]:
        removed: builtins.list[str] = self._client.request("POST", "/containers/prune").json()[
            "removed"
        ]
        return removed


class RemoteImages:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[ContainerImage]:
        from codex32 import ContainerImage

        return [ContainerImage(**i) for i in self._client.request("GET", "/images").json()]

    def get(self, name: str) -> ContainerImage:
        from codex32 import ContainerImage

        return ContainerImage(**self._client.request("GET", f"/images/{name}").json())

    def build(self, name: str, *, quiet: bool = False) -> ContainerImage:
        from codex32 import ContainerImage

        built = None
        with self._client.stream("POST", f"/images/{name}/build") as response:
            for line in response.iter_lines():
                item = json.loads(line)
                if "stream" in item and not quiet:
                    sys.stderr.write(item["stream"])
                    sys.stderr.flush()
                elif "error" in item:
                    error = item["error"]
                    raise codex32.ImageError(error["message"], hint=error.get("hint"))
                elif "image" in item:
                    built = ContainerImage(**item["image"])
        if built is None:
            raise codex32.ImageError(f"the build of {name} ended without a result")
        return built


class RemoteNetworks:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, name: str, subnet: str, *, gateway: str | None = None, masquerade: bool = False
    ) -> Any:
        from codex32 import NetworkDefinition

        body = {"name": name, "subnet": subnet, "gateway": gateway, "masquerade": masquerade}
        return NetworkDefinition.from_json(
            self._client.request("POST", "/networks", json=body).json()
        )

    def list(self) -> list[Any]:
        from codex32 import NetworkDefinition

        return [
            NetworkDefinition.from_json(n) for n in self._client.request("GET", "/networks").json()
        ]

    def inspect(self, name: str) -> dict[str, Any]:
        inspected: dict[str, Any] = self._client.request("GET", f"/networks/{name}").json()
        return inspected

    def remove(self, name: str) -> None:
        self._client.request("DELETE", f"/networks/{name}")


class RemoteEngine:
    """The engine's face, over the service."""

    def __init__(self, host: str) -> None:
        self.client = Client(host)
        self.containers = RemoteContainers(self.client)
        self.images = RemoteImages(self.client)
        self.networks = RemoteNetworks(self.client)

    def plan(self, config: ContainerConfig) -> _Plan:
        body = config.model_dump(mode="json", exclude_unset=True)
        return _Plan(self.client.request("POST", "/containers/plan", json=body).json())

    def info(self) -> dict[str, Any]:
        report: dict[str, Any] = self.client.request("GET", "/info").json()
        return report

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        filters: dict[str, list[str]] | None = None,
        follow: bool = False,
    ) -> Iterator[Any]:
        from codex32 import Event

        params: dict[str, Any] = {"follow": follow}
        if since is not None:
            params["since"] = repr(since)
        if until is not None:
            params["until"] = repr(until)
        params["filter"] = [f"{k}={v}" for k, values in (filters or {}).items() for v in values]
        with self.client.stream("GET", "/events", params=params) as response:
            for line in response.iter_lines():
                if line:
                    yield Event.from_json(line)

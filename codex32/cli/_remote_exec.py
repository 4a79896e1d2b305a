"""``exec -i``/``-it`` through the service: the exec WebSocket relayed to our terminal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading

import codex32
from codex32 import Codex32Error
from codex32.cli._remote import API, Client, write_all


def interactive_exec(
    client: Client,
    container_id: str,
    command: list[str],
    env: dict[str, str],
    user: str | None,
    workdir: str | None,
    stdin: int | None,
    stdout: int | None,
    tty: bool,
) -> int:
    """``exec -i``/``-it`` over the service's WebSocket: our stdin in, output out,
    window-size changes (SIGWINCH) sent as resizes."""
    import fcntl
    import struct
    import termios
    from urllib.parse import urlencode

    from websockets.sync.client import connect, unix_connect

    rows, cols = 24, 80
    if stdin is not None and os.isatty(stdin):
        with contextlib.suppress(OSError):
            rows, cols = struct.unpack("HHHH", fcntl.ioctl(stdin, termios.TIOCGWINSZ, b"\0" * 8))[
                :2
            ]
    query: list[tuple[str, str]] = [("cmd", arg) for arg in command]
    query += [("tty", "true" if tty else "false"), ("rows", str(rows)), ("cols", str(cols))]
    query += [("env", f"{k}={v}") for k, v in env.items()]
    if user:
        query.append(("user", user))
    if workdir:
        query.append(("workdir", workdir))
    path = f"{API}/containers/{container_id}/exec?{urlencode(query)}"
    headers = client.headers or None
    if client.unix_path is not None:
        ws = unix_connect(client.unix_path, client.ws_base + path, additional_headers=headers)
    else:
        ws = connect(client.ws_base + path, additional_headers=headers)
    done = threading.Event()

    def pump_stdin() -> None:
        assert stdin is not None
        while not done.is_set():
            try:
                data = os.read(stdin, 65536)
            except OSError:
                data = b""
            try:
                if not data:
                    ws.send(json.dumps({"type": "eof"}))
                    return
                ws.send(data)
            except Exception:
                return

    def resized(_sig: int, _frame: object) -> None:
        with contextlib.suppress(Exception):
            size = fcntl.ioctl(stdin or 0, termios.TIOCGWINSZ, b"\0" * 8)
            r, c = struct.unpack("HHHH", size)[:2]
            ws.send(json.dumps({"type": "resize", "rows": r, "cols": c}))

    previous = None
    if tty and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGWINCH, resized)
    if stdin is not None:
        threading.Thread(target=pump_stdin, name="codex32-exec-stdin", daemon=True).start()
    try:
        with ws:
            for frame in ws:
                if isinstance(frame, bytes):
                    write_all(stdout, frame)
                    continue
                message = json.loads(frame)
                if message.get("type") == "exit":
                    return int(message["exit_code"])
                if message.get("type") == "error":
                    kind, hint = message.get("kind"), message.get("hint")
                    cls = getattr(codex32, str(kind), Codex32Error)
                    if not (isinstance(cls, type) and issubclass(cls, Codex32Error)):
                        cls = Codex32Error
                    raise cls(str(message.get("message")), hint=hint)
        raise Codex32Error("the service closed the exec without an exit code")
    finally:
        done.set()
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)

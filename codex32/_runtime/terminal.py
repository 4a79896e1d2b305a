"""A pseudo-terminal for ``exec -t``, relayed to the caller's descriptors.

``run -t`` gets its terminal from the monitor, which owns the container's output for
its whole life. An exec'd process is the engine's for as long as it runs: the engine
opens the pty, gives the slave end to the exec'd command as its stdio (the command
makes it its controlling terminal, see ``_exec``) and copies between the master end
and the caller on a thread, as ``docker exec -t`` does through dockerd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import threading

from codex32._linux.pty import copy_window_size, open_pty, write_all

_CHUNK = 65536


def _fileno(target: object) -> int | None:
    if target is None:
        return None
    if isinstance(target, int):
        return target
    fileno = getattr(target, "fileno", None)
    return int(fileno()) if callable(fileno) else None


class ExecTerminal:
    """Open a pty; ``relay`` copies ``stdin`` -> master and master -> ``stdout``.

    ``stdin``/``stdout`` are descriptors or file objects (``stdin`` may be ``None``: the
    command then reads end-of-file from its terminal once it asks). ``ptmx``: the
    container's ``/dev/pts/ptmx`` (through ``/proc/PID/root``), so that the terminal
    is one of the container's own and has a name there (``tty``, ``ttyname``).
    """

    def __init__(self, stdin: object, stdout: object, ptmx: str | None = None) -> None:
        self._in = _fileno(stdin)
        self._out = _fileno(stdout)
        if self._out is None:
            raise ValueError("a terminal needs somewhere to write")
        self.master, self.slave = _open_pty(ptmx)
        if self._in is not None:
            copy_window_size(self._in, self.master)  # the caller's, as Docker's
        self._thread = threading.Thread(target=self._relay, name="codex32-exec-tty", daemon=True)

    def start(self) -> None:
        """Relay from now on (the command is given ``slave`` as its stdio)."""
        self._thread.start()

    def finish(self) -> None:
        """After the command ended: drop the engine's slave, copy out the rest, close."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1
        if self._thread.is_alive():
            self._thread.join()
        self.close()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = -1

    def _relay(self) -> None:
        assert self._out is not None
        selector = selectors.DefaultSelector()
        selector.register(self.master, selectors.EVENT_READ, "out")
        if self._in is not None:
            selector.register(self._in, selectors.EVENT_READ, "in")
        output_open = True  # a caller that stopped reading (EPIPE): drain and drop
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "out":
                        try:
                            data = os.read(self.master, _CHUNK)
                        except OSError as exc:
                            if exc.errno == errno.EIO:  # every slave closed: it ended
                                return
                            raise
                        if not data:
                            return
                        if output_open:
                            try:
                                write_all(self._out, data)
                            except OSError:
                                output_open = False  # keep reading: the command must not block
                    else:
                        try:
                            data = os.read(key.fd, _CHUNK)
                        except OSError:
                            data = b""  # the caller's input failed: as its end
                        if not data:
                            selector.unregister(key.fd)
                            write_all(self.master, b"\x04")  # EOF, as a terminal says it
                        else:
                            write_all(self.master, data)
        except OSError:
            return  # the master failed: the command gets EIO on its terminal
        finally:
            selector.close()


def _open_pty(ptmx: str | None) -> tuple[int, int]:
    """(master, slave), from the given devpts instance if it can, else the caller's."""
    if ptmx is not None:
        try:
            return open_pty(ptmx)
        except FileNotFoundError:
            pass  # no devpts of its own there: the host's terminal will do
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    return master, slave

"""Small thread helpers: a call in the background, captured output."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Generic, TypeVar, cast

from codex32._runtime.launch import FileArg

if TYPE_CHECKING:
    pass

T = TypeVar("T")


class Background(Generic[T]):
    """A call run on its own thread at once; ``result()`` joins it and returns or raises."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="codex32-background")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def wait(self) -> None:
        """Join, whatever the outcome."""
        self._thread.join()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


class Captured:
    """A caller's descriptor passed through, or a temp file read back afterwards."""

    def __init__(self, target: FileArg, file: IO[bytes] | None) -> None:
        self._file = file
        self.target: FileArg = file if file is not None else target

    def read(self) -> bytes:
        if self._file is None:
            return b""
        self._file.seek(0)
        return self._file.read()


@contextmanager
def capture(target: FileArg) -> Iterator[Captured]:
    if target is not None:
        yield Captured(target, None)
        return
    with tempfile.TemporaryFile() as file:
        yield Captured(None, file)

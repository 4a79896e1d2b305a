"""Engine errors as HTTP answers: one message, the error's kind, a hint, the status that fits.

The engine's errors are classes, not codes; a few classes cover several cases (a
``ConfigError`` for a bad config and for a name taken), told apart here by what their
message says, in this one place. Anything unexpected is a 500 whose body names the
exception's type, never a traceback (that goes to the service's log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from codex32 import (
    Codex32Error,
    ConfigError,
    ContainerNotFoundError,
    ImageError,
    ImageNotFoundError,
    LaunchError,
    NetworkError,
    StateError,
)
from codex32.service.policy import PolicyDenied

log = logging.getLogger("codex32.service")

_CONFLICT_WORDS = (
    "already in use",
    "already exists",
    "is in use",
    "already published",
    "overlaps",
    "already used",
)


@dataclass(frozen=True)
class ApiError:
    """What an error answer carries."""

    status: int
    message: str
    kind: str
    hint: str | None = None
    rule: str | None = None
    exit_code: int | None = None  # a LaunchError's (Docker's 125/126/127)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "kind": self.kind, "hint": self.hint}
        if self.rule is not None:
            body["rule"] = self.rule
        if self.exit_code is not None:
            body["exit_code"] = self.exit_code
        return body


class ApiProblemError(Exception):
    """Raised by the routes for errors of the API itself (a bad query value, 401)."""

    def __init__(
        self, status: int, message: str, *, kind: str = "RequestError", hint: str | None = None
    ) -> None:
        self.error = ApiError(status, message, kind, hint)
        super().__init__(message)


def status_of(error: Codex32Error) -> int:
    """The HTTP status for an engine error."""
    text = error.message
    if isinstance(error, PolicyDenied):
        return 403
    if isinstance(error, ContainerNotFoundError):
        return 404
    if isinstance(error, StateError):
        return 409
    if type(error).__name__ == "CgroupError" or "cannot enforce" in text:
        return 422  # a limit this host cannot enforce (refused at create, or at start)
    if isinstance(error, LaunchError):
        return 400 if error.exit_code in (126, 127) else 500
    if isinstance(error, ConfigError):
        return 409 if any(w in text for w in _CONFLICT_WORDS) else 400
    if isinstance(error, ImageNotFoundError):
        return 404
    if isinstance(error, ImageError):
        return 400 if text.startswith("bot script") else 500
    if isinstance(error, NetworkError):
        if "does not exist" in text:
            return 404
        if any(w in text for w in _CONFLICT_WORDS):
            return 409
        if text.startswith(("invalid", "subnet", "gateway", "the default network")):
            return 400
        return 500
    return 500


def from_exception(error: BaseException) -> ApiError:
    """The answer for any exception a route let through."""
    if isinstance(error, ApiProblemError):
        return error.error
    if isinstance(error, Codex32Error):
        hint = error.hint
        message = str(error)
        if hint and message.endswith(f". {hint}"):
            message = message[: -len(hint) - 2]  # the hint has its own field
        rule = error.rule if isinstance(error, PolicyDenied) else None
        code = error.exit_code if isinstance(error, LaunchError) else None
        return ApiError(status_of(error), message, type(error).__name__, hint, rule, code)
    if isinstance(error, ValidationError):
        return ApiError(
            400,
            validation_message(error.errors()),
            "ConfigError",
            "see the ContainerConfig schema at /openapi.json",
        )
    if isinstance(error, TimeoutError):
        return ApiError(
            408, str(error) or "timed out", "Timeout", "wait longer, or without a timeout"
        )
    if isinstance(error, ValueError):
        return ApiError(400, str(error), "ValueError")
    log.error("internal error", exc_info=error)
    return ApiError(
        500,
        f"internal error: {type(error).__name__}: {error}",
        "InternalError",
        "see the service's log (journalctl -u codex32)",
    )


def validation_message(errors: Any) -> str:
    """pydantic's errors as the CLI prints them: ``invalid configuration: loc: msg; ...``."""
    problems = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        msg = str(err.get("msg", "invalid"))
        problems.append(f"{'.'.join(loc) or 'config'}: {msg}")
    return "invalid configuration: " + "; ".join(problems)

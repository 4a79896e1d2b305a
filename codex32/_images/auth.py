"""Registry credentials from ``codex32 login``, in Docker's ``config.json`` shape.

``STORAGE/auth.json`` holds ``{"auths": {"HOST": {"auth": base64("user:password")}}}``,
mode 0600, written whole and renamed into place: as Docker's and Podman's auth files,
so a user can copy one in.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from codex32.errors import ImageError


def auth_path(storage_dir: Path) -> Path:
    return storage_dir / "auth.json"


def _read(path: Path) -> dict[str, dict[str, dict[str, str]]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"auths": {}}
    except ValueError as exc:
        raise ImageError(
            f"{path} is not valid JSON: {exc}", hint="remove it and log in again"
        ) from None
    data.setdefault("auths", {})
    return data  # type: ignore[no-any-return]


def save_credentials(storage_dir: Path, registry: str, username: str, password: str) -> None:
    """Remember ``username``/``password`` for ``registry`` (mode 0600)."""
    path = auth_path(storage_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read(path)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    data["auths"][registry] = {"auth": token}
    tmp = path.with_name(f".auth-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def remove_credentials(storage_dir: Path, registry: str) -> bool:
    path = auth_path(storage_dir)
    data = _read(path)
    if data["auths"].pop(registry, None) is None:
        return False
    tmp = path.with_name(f".auth-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return True


def credentials_for(storage_dir: Path, registry: str) -> tuple[str, str] | None:
    """The saved (username, password) for ``registry``, if any."""
    entry = _read(auth_path(storage_dir))["auths"].get(registry)
    if not entry or "auth" not in entry:
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password

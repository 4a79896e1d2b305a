"""Old path of :mod:`codex32._network.ports`, for monitors of an earlier version."""

from codex32._network.ports import *  # noqa: F403

"""Old path of :mod:`codex32._linux.netlink`, for monitors of an earlier version."""

from codex32._linux.netlink import *  # noqa: F403

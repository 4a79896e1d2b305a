"""Container networks as objects: definitions and address leases (no OS calls here).

The netlink side (bridge, veth, tc) lives in :mod:`codex32._linux.netlink`.
"""

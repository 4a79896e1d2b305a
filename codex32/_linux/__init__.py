"""Kernel interfaces only: syscalls, mounts, paths, processes, capabilities, pty,
BPF, seccomp loading, netlink and nftables. No policy: callers decide."""

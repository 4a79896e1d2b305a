"""Codex-32: a container engine for Linux, for running bots."""

"""Tests of the host service (codex32 serve) through real clients."""

"""Benchmarks of Codex-32 beside crun, runc and bubblewrap (``make bench``).

``bench/run.py`` is the entry point; docs/performance.md has the figures and how to
read them. The modules here are the bench's own code: nothing in ``codex32`` imports
them, and the only one that runs inside the engine's processes is ``probe`` (for the
start-up breakdown).
"""

"""Old path of :mod:`codex32._engine.restart`: monitors started by an earlier
version run ``python -m codex32._engine.restart``. Remove once no such monitor can run."""

from codex32._engine.restart import main

if __name__ == "__main__":
    raise SystemExit(main())

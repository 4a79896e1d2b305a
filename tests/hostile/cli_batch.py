"""Run many ``codex32`` command lines, each in a process of its own, cheaply.

``python cli_batch.py < cases.json > results.json``: each case is an argv list (strings
whose undecodable bytes are surrogate-escaped, as Python's own argv is). The runner
imports the CLI once, then forks one child per case that runs it with stdout and
stderr on files, as ``codex32 ARGS`` would, and exits with its code: one process per
case at the cost of a fork instead of an interpreter start (~0.6 s).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback


def _run(argv: list[str]) -> dict[str, object]:
    from codex32.cli.main import app

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            code = 0
            try:
                app(args=argv, prog_name="codex32")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        storage = os.environ.get("CODEX32_STORAGE_DIR", "")
        left = [
            f"{kind}/{entry}"
            for kind in ("containers", "names")
            for entry in (os.listdir(os.path.join(storage, kind))
                          if os.path.isdir(os.path.join(storage, kind)) else [])
        ]  # fmt: skip
        return {
            "left": left,
            "code": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def main() -> int:
    cases = json.load(sys.stdin)  # (lone surrogates survive JSON: undecodable bytes)
    import codex32.cli.main  # noqa: F401  (imported once, shared by every child)

    json.dump([_run(case) for case in cases], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

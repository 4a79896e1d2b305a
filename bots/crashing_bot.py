"""A bot that crashes: it runs for ``--after`` seconds, then exits with ``--code``.

For the executor's restart policy and back-off:
    codex32 bot deploy ./bots/crashing_bot.py --restart on-failure:5 -- --after 0.5
It writes how many times it started to its state directory ($BOT_STATE_DIR).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--after", type=float, default=2.0, help="seconds before crashing")
    parser.add_argument("--code", type=int, default=3, help="the exit code")
    args = parser.parse_args()
    starts = 1
    state = os.environ.get("BOT_STATE_DIR")
    if state:
        counter = Path(state) / "starts"
        starts = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(starts))
    print(f"crashing-bot: start {starts}, crashing in {args.after:g}s", flush=True)
    time.sleep(args.after)
    print(f"crashing-bot: exiting with {args.code}", flush=True)
    return args.code


if __name__ == "__main__":
    sys.exit(main())

"""A sample bot: logs a heartbeat and exits cleanly on SIGTERM.

Run in a container:  codex32 run --rm -v $PWD/bots:/bots:ro python -- python3 /bots/sample_bot.py
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

running = True


def _stop(signum: int, _frame: FrameType | None) -> None:
    global running  # noqa: PLW0603 - a signal handler's flag
    logging.info("received %s, shutting down", signal.Signals(signum).name)
    running = False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--beats", type=int, default=0, help="stop after N beats (0: forever)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between beats")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s sample-bot %(message)s", stream=sys.stdout
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.info(
        "started as pid %d, uid %d, on host %s", os.getpid(), os.getuid(), socket.gethostname()
    )
    beat = 0
    while running and (args.beats == 0 or beat < args.beats):
        beat += 1
        logging.info("heartbeat %d", beat)
        time.sleep(args.interval)
    logging.info("stopped cleanly after %d heartbeats", beat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

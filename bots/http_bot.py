"""A bot that serves HTTP: ``GET /health`` answers 200 (or 503 after ``--fail-after`` s).

For the executor's HTTP and TCP probes:
    codex32 bot deploy ./bots/http_bot.py --type container --health-http 8080/health
"""

from __future__ import annotations

import argparse
import http.server
import logging
import signal
import sys
import threading
import time
from types import FrameType

STARTED = time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fail-after", type=float, default=0, help="turn unhealthy after N s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s http-bot %(message)s",
                        stream=sys.stdout)  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            failing = args.fail_after and time.monotonic() - STARTED > args.fail_after
            status = 404 if self.path not in {"/", "/health"} else 503 if failing else 200
            body = b"ok\n" if status == 200 else b"unhealthy\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: object) -> None:
            logging.info("%s %s", self.address_string(), format % values)

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.info("received %s, shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    logging.info("serving on %s:%d", args.host, args.port)
    server.serve_forever()
    server.server_close()
    logging.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Install and enable the systemd units of the host service for this checkout (as root):
# the socket unit (/run/codex32/codex32.sock, 0660 root:codex32) and the service,
# which runs this checkout's .venv/bin/codex32. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
checkout=$PWD
storage=${CODEX32_STORAGE_DIR:-/var/lib/codex32}
getent group codex32 >/dev/null || groupadd --system codex32
sed -e "s#@CODEX32@#$checkout/.venv/bin/codex32#" -e "s#@STORAGE@#$storage#" \
    contrib/systemd/codex32.service > /etc/systemd/system/codex32.service
install -m 0644 contrib/systemd/codex32.socket /etc/systemd/system/codex32.socket
systemctl daemon-reload
systemctl enable --now codex32.socket
systemctl enable codex32.service
systemctl restart codex32.service
echo "==> codex32.service running; try: curl --unix-socket /run/codex32/codex32.sock http://x/health"

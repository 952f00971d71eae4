#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the web demo's browser test (tests/app/test_app_e2e.py).
# Non-interactive and idempotent; never downloads a browser build of its own.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
chromedriver --version

#!/usr/bin/env bash
# Debian's chromium and chromium-driver for tests/browser (the connection form in Airflow 3's UI).
# Idempotent: does nothing when both are installed. Needs root, or sudo.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version 2>/dev/null

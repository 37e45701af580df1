#!/usr/bin/env bash
# Debian's Chromium (and its driver) for tests/test_browser.py, which drives it with Playwright.
# Installs with apt-get only when /usr/bin/chromium is missing and we are root on a Debian-like
# system; otherwise it does nothing (the browser tests then skip, saying why).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: /usr/bin/chromium is missing and this is not a root apt system;" \
       "the browser tests will be skipped (install chromium to run them)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
/usr/bin/chromium --version 2>/dev/null || true

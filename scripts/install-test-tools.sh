#!/usr/bin/env bash
# Installs the Debian packages the test suite drives besides Python ones: headless Chromium for the
# dashboard test. Needs root and apt-get; elsewhere it says what is missing and the test skips with a reason.
set -euo pipefail
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: chromium missing (as root on Debian: apt-get install -y chromium); the dashboard test will skip" >&2
  exit 0
fi
echo "install-test-tools: installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null

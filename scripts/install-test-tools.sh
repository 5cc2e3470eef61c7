#!/usr/bin/env bash
# Installs the Debian packages the test suite drives besides Python ones: headless Chromium for the
# dashboard page test and Prometheus for the dashboard's PromQL test. Needs root and apt-get; elsewhere it
# says what is missing and those tests skip with a reason.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: ${missing[*]} missing (as root on Debian: apt-get install -y ${missing[*]}); the tests needing them will skip" >&2
  exit 0
fi
echo "install-test-tools: installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

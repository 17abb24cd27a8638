#!/usr/bin/env bash
# Debian packages the test suite drives for real (browsers, Prometheus, ...). Installed
# only when missing, so a machine that has them pays nothing. Features append to PACKAGES.
set -euo pipefail
PACKAGES=(curl chromium prometheus iproute2)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages for the tests: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

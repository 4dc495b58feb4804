#!/usr/bin/env bash
# The system packages the tests need, from Debian: Chromium and its driver for
# the gallery's browser tests, docker-compose 1.29 to validate
# docker-compose.yml offline (--no-install-recommends keeps docker.io out: no
# engine is needed). Run by `make test` and CI; installs what is missing when
# run as root, otherwise stops at once and prints the one command to run.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "make test needs system packages that are missing: ${missing[*]}" >&2
  echo "run:  sudo apt-get update && sudo $cmd" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages (${missing[*]}) and no apt-get here: install their equivalents by hand" >&2
  exit 1
fi
echo "installing system packages for the tests: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive $cmd -qq >/dev/null

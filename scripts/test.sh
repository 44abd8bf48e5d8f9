#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it all.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq rsync openssh-server openssh-client lftp curl vsftpd acl time >/dev/null
python3 -m pip install -q -e '.[test]'
python3 -m ruff check src tests
exec python3 -m pytest -n 2 -q "$@"

#!/usr/bin/env bash
# Install the Debian packages for a one-node Ceph RGW S3 server (tests/servers/rgw.py).
# Idempotent: exits 0 at once when radosgw is already on PATH. Quiet on success; waits for
# the dpkg lock (another install running at the same time) instead of failing.
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)

if command -v radosgw >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n env DEBIAN_FRONTEND=noninteractive)
  else
    echo "install-rgw.sh: radosgw is missing and installing it needs root (or passwordless sudo)" >&2
    exit 1
  fi
else
  SUDO=()
fi

export DEBIAN_FRONTEND=noninteractive
LOG="$(mktemp -t install-rgw.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT

apt_install() {
  "${SUDO[@]}" apt-get install -o DPkg::Lock::Timeout=300 --no-install-recommends -y -q "${PACKAGES[@]}" >>"$LOG" 2>&1
}

# Update the package lists only when needed: first try with what is there.
if ! apt_install; then
  if ! "${SUDO[@]}" apt-get update -o DPkg::Lock::Timeout=300 -q >>"$LOG" 2>&1 || ! apt_install; then
    echo "install-rgw.sh: failed to install ${PACKAGES[*]}; apt-get output (tail):" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
fi

if ! command -v radosgw >/dev/null 2>&1; then
  echo "install-rgw.sh: packages installed but radosgw is still not on PATH" >&2
  exit 1
fi

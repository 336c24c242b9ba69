#!/bin/sh
# Debian packages the real-kernel VM tests need (tests/vm/README.md). Run as root; CI calls it
# from .ci/run. The guest kernel itself is NOT installed: tests/vm/vmharness.py fetches it with
# `apt-get download` into $VFIDO_VM_CACHE (default ~/.cache/vfido-vm).
set -eu
# The list lives in apt-packages.txt (also read by vmharness.py): one list, not two.
VFIDO_VM_APT_PACKAGES=$(sed -e 's/#.*//' "$(dirname "$0")/apt-packages.txt" | tr -s ' \n' ' ')
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps.sh: not a Debian system (no apt-get); install the equivalents of:$VFIDO_VM_APT_PACKAGES" >&2
    exit 1
fi
missing=""
for p in $VFIDO_VM_APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
else
    # apt-cache must know linux-image-amd64 for the kernel download.
    apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt-get update
fi
echo "vm test packages present: $VFIDO_VM_APT_PACKAGES"

#!/bin/sh
# Install vfido's udev rule, the uhid modules-load.d file and the "vfido" group (run as root).
# Usage: sudo udev/install.sh [USER]   (USER is added to the group; default: $SUDO_USER)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
user=${1:-${SUDO_USER:-}}
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
getent group vfido >/dev/null || groupadd --system vfido
if [ -n "$user" ]; then usermod -aG vfido "$user"; echo "added $user to group vfido (log in again)"; fi
install -D -m 0644 "$here/70-vfido.rules" /etc/udev/rules.d/70-vfido.rules
install -D -m 0644 "$here/modules-load.d/vfido.conf" /etc/modules-load.d/vfido.conf
modprobe uhid || echo "warning: modprobe uhid failed (is CONFIG_UHID enabled in this kernel?)" >&2
if command -v udevadm >/dev/null; then
    udevadm control --reload-rules || true
    udevadm trigger --action=change --subsystem-match=misc --subsystem-match=hidraw || true
fi
echo "installed /etc/udev/rules.d/70-vfido.rules and /etc/modules-load.d/vfido.conf"

#!/bin/busybox sh
# /init of the vfido test guest (busybox initramfs built by tests/vm/vmharness.py).
# Mounts the host root read-only (9p tag "hostroot"), the results share ("vfidoout") and the
# checkout ("checkout", writable, at the same path as on the host), then chroots into the
# host root and runs the guest check script. Markers on the console tell the harness
# how far the guest got.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "VFIDO-GUEST: init"
for m in virtio_pci 9pnet_virtio 9p uhid hid-generic; do
    modprobe "$m" || echo "VFIDO-GUEST: modprobe $m failed"
done
P9="trans=virtio,version=9p2000.L,msize=262144"
mkdir -p /newroot
# The host root is read-only and does not change during a run: let the guest cache it
# (cache=loose), which makes Python imports and browser start-up several times faster.
mount -t 9p -o "$P9,ro,cache=loose" hostroot /newroot || { echo "VFIDO-GUEST-FATAL: hostroot mount"; poweroff -f; }
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm 2>/dev/null
mount -t devpts devpts $R/dev/pts
mount -t tmpfs shm $R/dev/shm
mount -t tmpfs tmp $R/tmp
mount -t tmpfs run $R/run
mkdir -p $R/tmp/vfido-out
mount -t 9p -o "$P9" vfidoout $R/tmp/vfido-out || { echo "VFIDO-GUEST-FATAL: results mount"; poweroff -f; }
. $R/tmp/vfido-out/guest.env
mkdir -p "$R$VFIDO_CHECKOUT" 2>/dev/null
mount -t 9p -o "$P9" checkout "$R$VFIDO_CHECKOUT" || { echo "VFIDO-GUEST-FATAL: checkout mount"; poweroff -f; }
echo "VFIDO-GUEST: chroot $(cut -d' ' -f1 /proc/uptime)"
chroot $R /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp/home LANG=C.UTF-8 PYTHONPATH="$VFIDO_CHECKOUT" PYTHONDONTWRITEBYTECODE=1 \
    VFIDO_CHECKOUT="$VFIDO_CHECKOUT" VFIDO_PYTHON="$VFIDO_PYTHON" VFIDO_CHECKS="$VFIDO_CHECKS" \
    VFIDO_OUT=/tmp/vfido-out \
    "$VFIDO_PYTHON" "$VFIDO_CHECKOUT/tests/vm/guest_checks.py" \
    > $R/tmp/vfido-out/guest.log 2>&1
echo "VFIDO-GUEST-EXIT: $?"
sync
umount "$R$VFIDO_CHECKOUT" 2>/dev/null
umount $R/tmp/vfido-out 2>/dev/null
poweroff -f

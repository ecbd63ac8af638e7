#!/bin/sh
# nbdroot, dracut mount hook (priority 10, before rootfs-block's): mount the NBD root with the
# fstype and options from root=nbd:… or the DHCP root-path, which dracut's own mount does not
# know. Shell initrds only: under systemd, sysroot.mount (from nbdroot-generator) mounts it.

# shellcheck source=/dev/null # dracut's library, in the image
type die > /dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -e /run/nbdroot/root.env ] && ! ismounted "$NEWROOT"; then
    if ! /usr/sbin/nbdroot mount "$NEWROOT"; then
        die "$(cat /run/nbdroot/error 2> /dev/null || echo 'nbdroot: mounting the root failed')"
    fi
fi

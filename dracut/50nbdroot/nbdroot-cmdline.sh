#!/bin/sh
# shellcheck disable=SC2154 # dracut sets hookdir; nbdroot's answer sets nbdroot_device
# nbdroot, dracut command-line hook (priority 90, like every netroot parser, so that dracut's
# netroot re-reads it for root=dhcp). Sourced by dracut: it returns, never exits.
#
# nbdroot itself reads the command line (/etc/cmdline.d/*.conf, then /proc/cmdline) with the
# grammar its own /init uses, and answers with shell assignments: rootok=1,
# nbdroot_device=/dev/nbdN, netroot=nbd:… when the root is in such a string and, unless root=
# names a label or UUID, root=block:/dev/nbdN[pM].

# shellcheck source=/dev/null # dracut's library, in the image
type die > /dev/null 2>&1 || . /lib/dracut-lib.sh

nbdroot_vars=$(/usr/sbin/nbdroot dracut-cmdline)
case $? in
    0) eval "$nbdroot_vars" ;;
    1)
        unset nbdroot_vars
        return 0
        ;;
    *) die "${nbdroot_vars:-nbdroot: cannot read the command line}" ;;
esac
unset nbdroot_vars

[ -d /sys/module/nbd ] || modprobe -q nbd || die "nbdroot: the kernel has no nbd driver (modprobe nbd failed)"

# Who attaches: nbdroot's own attach (started below), unless the image leaves the network to dracut
# (nbdroot_network=dracut) and dracut's netroot has an nbd: string to call nbdroot with.
mkdir -p /run/nbdroot
nbdroot_by_dracut=
if [ -e /etc/nbdroot/dracut-network ]; then
    case " $netroot $(getarg root=) $(getarg netroot=) " in
        *" nbd:"* | *" dhcp "*) nbdroot_by_dracut=1 ;;
    esac
fi
[ -n "$nbdroot_by_dracut" ] || : > /run/nbdroot/wanted
unset nbdroot_by_dracut

# Attach now, in the background, while udev's coldplug goes on: dracut runs its settled hooks
# only once udev has settled, seconds the root does not need. The early attach configures
# only interfaces udev has finished with (--udev) and, when it ends, wakes dracut's main loop,
# whose finished check then sees the root. The loop waits in `udevadm settle
# --exit-if-exists=initqueue/work`, which looks for that file only when a file in /run/udev is
# deleted (it watches the directory for the queue file's removal, at the coldplug's end): a
# file made and removed there wakes it now, not seconds later.
# The settled hook reports a failure through die. Once: this hook runs again for root=dhcp.
if [ -e /run/nbdroot/wanted ] && [ ! -e /run/nbdroot/early.pid ]; then
    (
        /usr/sbin/nbdroot attach --udev
        echo "$?" > /run/nbdroot/early.rc.new
        mv -f /run/nbdroot/early.rc.new /run/nbdroot/early.rc
        : >> "$hookdir/initqueue/work"
        if [ -d /run/udev ]; then
            : > /run/udev/nbdroot-wake && rm -f /run/udev/nbdroot-wake
        fi
    ) < /dev/null &
    echo "$!" > /run/nbdroot/early.pid
fi

# Finished only once the device is attached (its node exists as soon as the driver loads) and
# the early attach is over: after the connect it still records the root for the mount and,
# with a DHCP root-path's fstype or options, reloads systemd for sysroot.mount.
echo "{ [ -e /run/nbdroot/early.rc ] || [ ! -e /run/nbdroot/early.pid ]; } && /usr/sbin/nbdroot check $nbdroot_device > /dev/null 2>&1" > "$hookdir/initqueue/finished/90-nbdroot.sh"

need_shutdown

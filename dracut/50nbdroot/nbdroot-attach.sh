#!/bin/sh
# nbdroot, dracut initqueue/settled hook: see the NBD root attached. Sourced in every round of
# the main loop until the root is attached.
#
# The command-line hook started the attach early, in the background: while it runs there is
# nothing to do (it wakes the main loop when it ends); when it failed, its line goes to die.
# Without it (it could not start) the attach runs here; nbdroot attach is idempotent. So it
# does when the early one found no network interface ready (exit 3): its wait began before
# udev's coldplug, which a slow machine may not have finished; this hook runs once udev has
# settled, and the wait starts again from there.
#
# Unless the image was built with nbdroot_network=dracut (then dracut's network modules call
# nbdroot as their netroot handler), nbdroot brings the network up itself.

# shellcheck source=/dev/null # dracut's library, in the image
type die > /dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -e /run/nbdroot/wanted ] && [ ! -e /run/nbdroot/root.env ]; then
    nbdroot_rc=0
    if [ -e /run/nbdroot/early.rc ]; then
        nbdroot_rc=$(cat /run/nbdroot/early.rc)
        if [ "$nbdroot_rc" = 3 ]; then
            /usr/sbin/nbdroot attach --udev
            nbdroot_rc=$?
        fi
    elif [ ! -e /run/nbdroot/early.pid ] || ! kill -0 "$(cat /run/nbdroot/early.pid)" 2> /dev/null; then
        /usr/sbin/nbdroot attach --udev
        nbdroot_rc=$?
    fi
    [ "$nbdroot_rc" = 0 ] || die "$(cat /run/nbdroot/error 2> /dev/null || echo 'nbdroot: attaching the root failed')"
    unset nbdroot_rc
fi

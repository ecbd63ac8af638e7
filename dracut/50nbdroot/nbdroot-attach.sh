#!/bin/sh
# nbdroot, dracut initqueue/settled hook: attach the NBD root. Sourced in every round of the
# main loop until the root is attached; nbdroot attach is idempotent.
#
# Unless the image was built with nbdroot_network=dracut (then dracut's network modules call
# nbdroot as their netroot handler), nbdroot brings the network up itself.

# shellcheck source=/dev/null # dracut's library, in the image
type die > /dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -e /run/nbdroot/wanted ] && [ ! -e /run/nbdroot/root.env ]; then
    if ! /usr/sbin/nbdroot attach; then
        die "$(cat /run/nbdroot/error 2> /dev/null || echo 'nbdroot: attaching the root failed')"
    fi
fi

#!/bin/sh
# nbdroot, dracut shutdown hook: back in the initramfs at shutdown, disconnect the nbd devices
# whose filesystems are unmounted or read-only by now. dracut runs shutdown hooks until they
# stop failing, so a device still mounted read-write is left for a later round (and, at the
# end, to the kernel, which drops it at power-off). Its lines go to the console (dracut's
# shutdown sends the hooks' output there).

nbdroot_left=
for nbdroot_pid in /sys/block/nbd*/pid; do
    [ -e "$nbdroot_pid" ] || continue
    nbdroot_dev=${nbdroot_pid%/pid}
    nbdroot_dev=/dev/${nbdroot_dev##*/}
    nbdroot_state=unmounted
    while read -r nbdroot_src nbdroot_mp _ nbdroot_opts _; do
        case "$nbdroot_src" in
            "$nbdroot_dev" | "$nbdroot_dev"p*)
                case ",$nbdroot_opts," in
                    *,ro,*) [ "$nbdroot_state" = busy ] || nbdroot_state="read-only on $nbdroot_mp" ;;
                    *) nbdroot_state=busy ;;
                esac
                ;;
        esac
    done < /proc/mounts
    if [ "$nbdroot_state" = busy ]; then
        echo "nbdroot: shutdown: $nbdroot_dev is still mounted read-write: not disconnected yet"
        nbdroot_left=1
    elif /usr/sbin/nbdroot disconnect "$nbdroot_dev"; then
        echo "nbdroot: shutdown: $nbdroot_dev $nbdroot_state: disconnected"
    else
        echo "nbdroot: shutdown: $nbdroot_dev $nbdroot_state: disconnecting failed"
    fi
done
unset nbdroot_pid nbdroot_dev nbdroot_state nbdroot_src nbdroot_mp nbdroot_opts
# Fail (dracut calls the hook again) while a device is busy; the last round ("final") is the
# end of it.
[ -z "$nbdroot_left" ] || [ -n "$final" ]

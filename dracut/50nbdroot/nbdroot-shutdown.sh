#!/bin/sh
# nbdroot, dracut shutdown hook: back in the initramfs at shutdown, disconnect the nbd devices
# whose filesystems are unmounted or read-only by now. dracut runs shutdown hooks until they
# stop failing, so a device still mounted read-write is left for a later round (and, at the
# end, to the kernel, which drops it at power-off).

for nbdroot_pid in /sys/block/nbd*/pid; do
    [ -e "$nbdroot_pid" ] || continue
    nbdroot_dev=${nbdroot_pid%/pid}
    nbdroot_dev=/dev/${nbdroot_dev##*/}
    nbdroot_busy=
    while read -r nbdroot_src _ _ nbdroot_opts _; do
        case "$nbdroot_src" in
            "$nbdroot_dev" | "$nbdroot_dev"p*)
                case ",$nbdroot_opts," in
                    *,ro,*) ;;
                    *) nbdroot_busy=1 ;;
                esac
                ;;
        esac
    done < /proc/mounts
    if [ -z "$nbdroot_busy" ]; then
        /usr/sbin/nbdroot disconnect "$nbdroot_dev" || true
    fi
done
unset nbdroot_pid nbdroot_dev nbdroot_busy nbdroot_src nbdroot_opts

#!/bin/bash
# shellcheck disable=SC2154 # dracut sets moddir, initdir, dracutbasedir, systemdutildir and the dracut.conf variables
# nbdroot's dracut module: the root filesystem on NBD, attached by nbdroot (a static binary)
# instead of nbd-client. dracut sources this file in bash at build time.
#
# dracut.conf variables:
#   nbdroot_network=dracut   let dracut's network modules configure the interface and call
#                            nbdroot as their netroot handler; default: nbdroot configures
#                            the network itself (its own DHCP client)
#   nbdroot_binary=<path>    the static binary to put in the image [default: /usr/sbin/nbdroot]

# Where the binary goes in the image: the hook scripts call it by this path.
nbdroot_bin=/usr/sbin/nbdroot

# called by dracut
check() {
    if [[ ! -x ${nbdroot_binary:-$nbdroot_bin} ]]; then
        dinfo "dracut module 'nbdroot' needs ${nbdroot_binary:-$nbdroot_bin}"
        return 1
    fi
    # hostonly: included when the root sits on an nbd device; otherwise only on request.
    if [[ $hostonly ]] || [[ $mount_needs ]]; then
        local _rootdev
        _rootdev=$(find_root_block_device)
        if [[ $_rootdev ]] && check_block_and_slaves block_is_nbd "$_rootdev"; then
            return 0
        fi
    fi
    return 255
}

# called by dracut
depends() {
    local _deps="rootfs-block kernel-network-modules" _d
    # The initqueue is a module of its own from dracut-ng 108 on; before that it is part of
    # base, and naming a module that does not exist fails the build.
    for _d in "$dracutbasedir"/modules.d/[0-9][0-9]initqueue; do
        [[ -d $_d ]] && _deps+=" initqueue"
    done
    [[ $nbdroot_network == dracut ]] && _deps+=" network"
    echo "$_deps"
    return 0
}

# called by dracut
installkernel() {
    hostonly='' instmods nbd
}

# called by dracut
install() {
    if dracut_module_included nbd; then
        dfatal "nbdroot replaces dracut's nbd module, which is also included: leave it out with omit_dracutmodules+=\" nbd \" (nbdroot installs /usr/lib/dracut/dracut.conf.d/50-nbdroot.conf for that)"
        return 1
    fi
    # Static: nothing else to install with it.
    inst_simple "${nbdroot_binary:-$nbdroot_bin}" "$nbdroot_bin"
    inst_hook cmdline 90 "$moddir/nbdroot-cmdline.sh"
    inst_hook initqueue/settled 50 "$moddir/nbdroot-attach.sh"
    inst_hook mount 10 "$moddir/nbdroot-mount.sh"
    inst_hook shutdown 50 "$moddir/nbdroot-shutdown.sh"
    if dracut_module_included systemd-initrd || dracut_module_included systemd; then
        inst_dir "$systemdutildir/system-generators"
        ln_r "$nbdroot_bin" "$systemdutildir/system-generators/nbdroot-generator"
    fi
    if [[ $nbdroot_network == dracut ]]; then
        inst_dir /etc/nbdroot
        : > "$initdir/etc/nbdroot/dracut-network"
    fi
    dracut_need_initqueue
}

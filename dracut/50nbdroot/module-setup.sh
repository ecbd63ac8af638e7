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
#   nbdroot_tls_dir=<dir>    TLS credentials for the NBD server [default: /etc/nbdroot/tls]:
#                            whichever of ca.pem, client-cert.pem and client-key.pem are there
#                            go to /etc/nbdroot/tls in the image (the key 0600), where the
#                            boot finds them, and the kernel TLS modules with them

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

# The kernel TLS modules for nbdroot's cipher, ChaCha20-Poly1305 (nbdroot's tls::MODULES).
nbdroot_tls_modules="tls libchacha chacha-x86_64 poly1305-x86_64 chacha20poly1305"

# Whether the host has TLS credentials for the image.
nbdroot_tls() {
    local _f
    for _f in ca.pem client-cert.pem client-key.pem; do
        [[ -e ${nbdroot_tls_dir:-/etc/nbdroot/tls}/$_f ]] && return 0
    done
    return 1
}

# called by dracut
installkernel() {
    hostonly='' instmods nbd
    if nbdroot_tls; then
        # shellcheck disable=SC2086 # a list of names
        hostonly='' instmods $nbdroot_tls_modules
    fi
}

# Copies the credentials: readable by root only in the image, the directory too.
nbdroot_tls_install() {
    local _dir=${nbdroot_tls_dir:-/etc/nbdroot/tls} _f _mode _cert=0 _key=0
    [[ -e $_dir/client-cert.pem ]] && _cert=1
    [[ -e $_dir/client-key.pem ]] && _key=1
    if ((_cert != _key)); then
        dfatal "nbdroot: $_dir has only one of client-cert.pem and client-key.pem; a client certificate needs its key"
        return 1
    fi
    mkdir -p "$initdir/etc/nbdroot/tls"
    chmod 0700 "$initdir/etc/nbdroot/tls"
    for _f in ca.pem client-cert.pem client-key.pem; do
        [[ -e $_dir/$_f ]] || continue
        _mode=0644
        [[ $_f == client-key.pem ]] && _mode=0600
        # `command`: install() is this module's own hook function.
        if ! command install -m "$_mode" "$_dir/$_f" "$initdir/etc/nbdroot/tls/$_f"; then
            dfatal "nbdroot: cannot copy $_dir/$_f into the image"
            return 1
        fi
    done
}

# called by dracut
install() {
    if dracut_module_included nbd; then
        dfatal "nbdroot replaces dracut's nbd module, which is also included: leave it out with omit_dracutmodules+=\" nbd \" (nbdroot installs /usr/lib/dracut/dracut.conf.d/50-nbdroot.conf for that)"
        # dracut ignores what install() returns: end the build (its exit trap cleans up).
        exit 1
    fi
    # Static: nothing else to install with it.
    inst_simple "${nbdroot_binary:-$nbdroot_bin}" "$nbdroot_bin"
    # The hooks' own needs (dracut's base has them today; said here, not assumed).
    inst_multiple cat mv
    # Interfaces get in the image the names the root's udev gives them (predictable names, the
    # host's .link files), as dracut's network modules do under systemd: an interface nbdroot
    # brought up cannot be renamed later, and Debian 12's udev then marks it "being renamed"
    # for good, which systemd-networkd in the root waits on forever.
    inst_rules 75-net-description.rules 80-net-setup-link.rules
    inst_multiple -o "${systemdnetwork}/99-default.link" "${systemdnetwork}/98-default-mac-none.link"
    [[ $hostonly ]] && inst_multiple -H -o "${systemdnetworkconfdir}/*.link"
    inst_hook cmdline 90 "$moddir/nbdroot-cmdline.sh"
    inst_hook initqueue/settled 50 "$moddir/nbdroot-attach.sh"
    inst_hook shutdown 50 "$moddir/nbdroot-shutdown.sh"
    if dracut_module_included systemd-initrd || dracut_module_included systemd; then
        # sysroot.mount from the generator mounts the root. No mount hook: its presence alone
        # starts dracut-mount.service, a shell's time on the way to switch_root.
        inst_dir "$systemdutildir/system-generators"
        ln_r "$nbdroot_bin" "$systemdutildir/system-generators/nbdroot-generator"
    else
        inst_hook mount 10 "$moddir/nbdroot-mount.sh"
    fi
    if nbdroot_tls; then
        nbdroot_tls_install || return 1
    fi
    if [[ $nbdroot_network == dracut ]]; then
        inst_dir /etc/nbdroot
        : > "$initdir/etc/nbdroot/dracut-network"
    fi
    dracut_need_initqueue
}

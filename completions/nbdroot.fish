# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_nbdroot_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_nbdroot_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_nbdroot_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_nbdroot_using_subcommand
    set -l cmd (__fish_nbdroot_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c nbdroot -n "__fish_nbdroot_needs_command" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -s h -l help -d 'Print help'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -s V -l version -d 'Print version'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "connect" -d 'Attach an export to an nbd device (like nbd-client)'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "disconnect" -d 'Disconnect an nbd device'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "check" -d 'Tell whether an nbd device is connected'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "list" -d 'List the exports a server offers'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "info" -d 'Show an export: size, protocol, flags, block sizes, description'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "mkinitramfs" -d 'Write an initramfs whose /init is this binary'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "plan" -d 'Show what a kernel command line asks for, without doing it'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "boot" -d 'Run the boot as /init does (only as PID 1)'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "status" -d 'Show the reconnect supervisors: state, reconnects, last error'
complete -c nbdroot -n "__fish_nbdroot_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s N -l name -d 'Export name [default: from the URI, else the server\'s default]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s b -l block-size -d 'Kernel block size: 512, 1024, 2048 or 4096 [default: the server\'s minimum, at least 512]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s t -l timeout -d 'Kernel I/O timeout in seconds [default: 1 with --persist, doubled by the supervisor on a slow link up to 30; 30 without; none with --ioctl]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s C -l connections -d 'Number of connections; more than 1 needs the server\'s CAN_MULTI_CONN [default: 1]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s i -l identifier -d 'Backend identifier shown in /sys/block/nbdN/backend (netlink, Linux >= 5.14)' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l dead-timeout -d 'How long I/O waits for a dead connection to be replaced [default with --persist or --swap: 120]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l priority -d 'Swap priority, 0 to 32767 (implies --swap) [default: the kernel\'s]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l keepalive -d 'TCP keepalive: idle seconds, seconds between probes, probes; or off' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tcp-user-timeout -d 'TCP_USER_TIMEOUT in seconds: how long sent data may stay unacknowledged; 0 turns it off' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l replica -d 'A server exporting the same image (same size, flags and data, checked); repeatable' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l nbdtab -d 'The table read for `connect nbdN` [default: $NBDROOT_NBDTAB, else /etc/nbdtab]' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l connect-timeout -d 'Bound on connecting and on the handshake, in seconds' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l retries -d 'Attempts after the first fails (refused, timed out)' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tls-ca -d 'PEM file with the CA that signed the server\'s certificate' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tls-cert -d 'PEM client certificate, for servers that ask for one (with --tls-key)' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tls-key -d 'PEM private key of the client certificate' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tls-hostname -d 'Name the server\'s certificate must carry [default: the server as written]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tls-verify -d 'full: check the certificate against --tls-ca and the name; none: do not authenticate the server at all' -r -f -a "full\t''
none\t''"
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s R -l readonly -d 'Attach read-only'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s L -l ioctl -l nonetlink -d 'Use the ioctl interface: a daemon (@nbdroot serve) stays to serve the device'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l foreground -d 'With --ioctl: serve the device from this process until it is disconnected'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s p -l persist -d 'Keep a supervisor (@nbdroot) that replaces dead connections (netlink)'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l swap -d 'Swap on the device (implies --persist)'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l mkswap -d 'Write a swap signature first (implies --swap)'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l replicas-shared -d 'The replicas share their storage, so a writable export may fail over between them'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -l tls -d 'Use TLS (NBD_OPT_STARTTLS); connect hands kernel TLS sockets to the driver. Never falls back to plain text. Implied by nbds:// and by any --tls-* option'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand disconnect" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand disconnect" -s h -l help -d 'Print help'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand check" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l connect-timeout -d 'Bound on connecting and on the handshake, in seconds' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l retries -d 'Attempts after the first fails (refused, timed out)' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l tls-ca -d 'PEM file with the CA that signed the server\'s certificate' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l tls-cert -d 'PEM client certificate, for servers that ask for one (with --tls-key)' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l tls-key -d 'PEM private key of the client certificate' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l tls-hostname -d 'Name the server\'s certificate must carry [default: the server as written]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l tls-verify -d 'full: check the certificate against --tls-ca and the name; none: do not authenticate the server at all' -r -f -a "full\t''
none\t''"
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -l tls -d 'Use TLS (NBD_OPT_STARTTLS); connect hands kernel TLS sockets to the driver. Never falls back to plain text. Implied by nbds:// and by any --tls-* option'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -s N -l name -d 'Export name [default: from the URI, else the server\'s default]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l connect-timeout -d 'Bound on connecting and on the handshake, in seconds' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l retries -d 'Attempts after the first fails (refused, timed out)' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l tls-ca -d 'PEM file with the CA that signed the server\'s certificate' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l tls-cert -d 'PEM client certificate, for servers that ask for one (with --tls-key)' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l tls-key -d 'PEM private key of the client certificate' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l tls-hostname -d 'Name the server\'s certificate must carry [default: the server as written]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l tls-verify -d 'full: check the certificate against --tls-ca and the name; none: do not authenticate the server at all' -r -f -a "full\t''
none\t''"
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -l tls -d 'Use TLS (NBD_OPT_STARTTLS); connect hands kernel TLS sockets to the driver. Never falls back to plain text. Implied by nbds:// and by any --tls-* option'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand info" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -s o -l output -d 'The image to write' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l kver -d 'Kernel release whose modules to include [default: the running kernel\'s]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l kmoddir -d 'Directory holding <kver>/modules.dep' -r -f -a "(__fish_complete_directories)"
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l modules -d 'Modules /init always loads, with their dependencies [default: nbd,virtio_net,virtio_pci]' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l nic-modules -d 'NIC drivers /init loads for the devices it finds: default, none, or A,B,...' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l binary -d 'The static binary to use as /init [default: this one]' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l tls-ca -d 'CA certificate for the boot\'s TLS, copied to /etc/nbdroot/tls/ca.pem' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l tls-cert -d 'Client certificate, copied to /etc/nbdroot/tls/client-cert.pem' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l tls-key -d 'Client key, copied to /etc/nbdroot/tls/client-key.pem (mode 0600)' -r -F
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -l tls -d 'Include kernel TLS: the tls module and the crypto modules its ciphers need. Implied by --tls-ca, --tls-cert and --tls-key'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand mkinitramfs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand plan" -l root-path -d 'Show the plan as if DHCP had sent this root-path (option 17), for root=dhcp and nbdroot=dhcp' -r
complete -c nbdroot -n "__fish_nbdroot_using_subcommand plan" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand boot" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand boot" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand status" -s v -l verbose -d 'Print debug messages'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "connect" -d 'Attach an export to an nbd device (like nbd-client)'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "disconnect" -d 'Disconnect an nbd device'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "check" -d 'Tell whether an nbd device is connected'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "list" -d 'List the exports a server offers'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "info" -d 'Show an export: size, protocol, flags, block sizes, description'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "mkinitramfs" -d 'Write an initramfs whose /init is this binary'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "plan" -d 'Show what a kernel command line asks for, without doing it'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "boot" -d 'Run the boot as /init does (only as PID 1)'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "status" -d 'Show the reconnect supervisors: state, reconnects, last error'
complete -c nbdroot -n "__fish_nbdroot_using_subcommand help; and not __fish_seen_subcommand_from connect disconnect check list info mkinitramfs plan boot status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

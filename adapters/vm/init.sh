#!/bin/sh
# /init of the kernel adapter's guest (busybox sh, pid 1). image.py puts beside it:
#   /bin/busybox (+ applet links), /bin/ashcheck-exec (the executor, or a test stand-in),
#   /lib/modules/*.ko and /etc/ashcheck/modules ("<file>.ko [params]" per line, dependencies first).
# It loads the modules, finds the virtio-serial port named ashcheck0 (and waits for the process
# ports ashcheck1…), writes two lines there saying
# what the guest is and offers, then runs the executor's hub on that port until the host hangs up.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# devtmpfs creates /dev/ashmem, /dev/binder and /dev/vport* as the drivers register them. A kernel
# without it gets a tmpfs that mdev fills from /sys instead.
if mount -t devtmpfs devtmpfs /dev 2>/dev/null; then mdev=false; else mount -t tmpfs tmpfs /dev; mdev=true; fi

failed=""
while read -r ko params; do
    # shellcheck disable=SC2086  # params is a list of words on purpose
    insmod "/lib/modules/$ko" $params || failed="$failed,${ko%.ko}"
done < /etc/ashcheck/modules
$mdev && mdev -s

# virtio_console announces ports and their names asynchronously after insmod: poll for ours, if
# the driver is there at all (it registers the class at once): ashcheck0, the hub's, and the
# $ashcheck_ports process ports ashcheck1… (from the kernel command line), which the hub hands to
# the processes it spawns. (`read`, not `cat`: a process start is costly under TCG.)
port=""
ports=0
tries=0
failed=${failed#,}
while { [ -z "$port" ] || [ "$ports" -lt "${ashcheck_ports:-0}" ]; } && [ -d /sys/class/virtio-ports ] &&
      [ "$tries" -lt 300 ]; do
    ports=0
    for p in /sys/class/virtio-ports/*; do
        name=""
        read -r name 2>/dev/null < "$p/name"
        case $name in
            ashcheck0) port=/dev/${p##*/} ;;
            ashcheck[1-9]*) ports=$((ports + 1)) ;;
        esac
    done
    [ -n "$port" ] && [ "$ports" -ge "${ashcheck_ports:-0}" ] || { tries=$((tries + 1)); usleep 10000; }
done
if [ -z "$port" ]; then
    echo "ashcheck-init: no virtio-serial port named ashcheck0: the kernel needs virtio_pci and" \
         "virtio_console, built in or as modules (failed insmods: ${failed:-none})" >&2
    reboot -f
fi
$mdev && mdev -s
# Device modes as Android's ueventd.rc sets them: any process may open ashmem and binder. The
# kernel's default (0600) would refuse the suite's unprivileged (uid 65534) processes.
for node in /dev/ashmem /dev/binder; do [ -c "$node" ] && chmod 0666 "$node"; done

has() { [ -c "$1" ] && echo 1 || echo 0; }
# The port may be opened once only (virtio_console says EBUSY to a second open): one read-write fd
# serves the probe line and then the hub.
exec 3<>"$port"
# memory = MemTotal + SwapTotal in bytes: the bound of shmem's overcommit check on a first mmap.
memory=$(awk '/^(MemTotal|SwapTotal):/ { kb += $2 } END { print kb * 1024 }' /proc/meminfo)
# uname -v first, on a line of its own (it holds spaces): "#1 SMP Debian 5.10.223-1 (2024-08-10)"
# names the exact build where uname -r ("5.10.0-32-amd64") names only the ABI.
echo "* vm-version $(uname -v)" >&3
echo "* vm ashmem=$(has /dev/ashmem) binder=$(has /dev/binder) release=$(uname -r) memory=$memory" \
     "ports=$ports failed=$failed" >&3
# Not exec'd: init stays to end the guest when the hub ends (reboot, which qemu's -no-reboot turns
# into its exit: there is no ACPI to power off), with the hub's exit status on the console.
/bin/ashcheck-exec hub <&3 >&3 3>&-
echo "ashcheck-init: hub exited with status $?" >&2
reboot -f

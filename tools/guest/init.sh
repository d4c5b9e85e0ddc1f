#!/bin/sh
# /init of the cellink guest image (tools/guest/build-guest-image.sh puts it
# in the initramfs; docs/guests.md explains the image).
#
# It mounts the kernel file systems, loads the modules listed in
# /etc/cellink/modules in order, then runs the program named by
# `cellink.run=NAME` on the kernel command line, with one argument per
# `cellink.arg=VALUE`. Without cellink.run it starts a shell on the console.
# Either way it powers the machine off at the end, so that
# `qemu-system-x86_64 -no-reboot` exits.
#
# Every line it prints starts with "CELLINK-GUEST: ", for tests to match.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() {
  echo "CELLINK-GUEST: $*"
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say "init started on Linux $(uname -r)"

while read -r module; do
  if insmod "/lib/modules/cellink/$module.ko"; then
    say "module $module loaded"
  else
    say "module $module failed to load"
  fi
done </etc/cellink/modules
# What the drivers said about the ivshmem device (boot is `quiet`).
dmesg | grep -i ivshmem | while read -r line; do say "dmesg: $line"; done

run=""
set --
read -r cmdline </proc/cmdline
for word in $cmdline; do
  case "$word" in
    cellink.run=*) run="${word#cellink.run=}" ;;
    cellink.arg=*) set -- "$@" "${word#cellink.arg=}" ;;
  esac
done

if [ -n "$run" ]; then
  say "running $run $*"
  "$run" "$@"
  say "$run exited with status $?"
else
  say "no cellink.run= on the kernel command line: starting a shell, exit powers off"
  setsid cttyhack sh
fi

say "uptime $(cut -d' ' -f1 /proc/uptime) s, powering off"
poweroff -f

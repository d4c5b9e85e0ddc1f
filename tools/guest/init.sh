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
# `cellink.console_shell` also keeps a shell on the virtio console (/dev/hvcN,
# made by virtio_console on a virtio_ivshmem device): started once the console
# appears, started again whenever it exits or the console is re-created (a
# back-end restart). With cellink.console_shell and no cellink.run, /init
# starts no shell on the serial console and waits instead (nothing powers the
# machine off). The serial console keeps init's own output either way.
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

# The first virtio console that opens. The hvc driver has device nodes
# /dev/hvc0..7 whether or not a console is behind them; opening one that has
# none fails (ENODEV), and so does one whose device is gone but whose old
# shell has not let go of it yet. Only while virtio_console has a port
# (/sys/class/virtio-ports/vportNpM): opening a console whose port is gone
# makes the kernel log "hvc_open: request_irq failed".
find_hvc() {
  for port in /sys/class/virtio-ports/vport*; do
    [ -e "$port" ] && break
    return 1
  done
  for tty in /dev/hvc0 /dev/hvc1 /dev/hvc2 /dev/hvc3 /dev/hvc4 /dev/hvc5 /dev/hvc6 /dev/hvc7; do
    if [ -c "$tty" ] && (: <"$tty") 2>/dev/null; then
      echo "$tty"
      return 0
    fi
  done
  return 1
}

# Keeps an interactive shell on the virtio console. setsid makes the shell
# a session leader, so the console becomes its controlling terminal and a
# removed console (hvc hangs it up) ends it.
#
# The kernel's own replay of its log onto hvc0 (console=hvc0) is lost:
# virtio_console registers the hvc console before its port can take output,
# and the replayed lines are dropped. So, once per boot, the loop writes the
# kernel log (dmesg) to the first console that appears, before the shell.
console_shell_loop() {
  waiting_said=false
  replayed=false
  while :; do
    if ! tty="$(find_hvc)"; then
      if [ "$waiting_said" = false ]; then
        say "console shell: waiting for a virtio console (/dev/hvcN)"
        waiting_said=true
      fi
      sleep 0.2
      continue
    fi
    waiting_said=false
    if [ "$replayed" = false ]; then
      say "console shell: replaying the kernel log on $tty"
      dmesg >"$tty" 2>/dev/null
      replayed=true
    fi
    say "console shell: starting a shell on $tty"
    setsid sh -c "exec sh -i <>$tty >&0 2>&0"
    say "console shell on $tty exited with status $?"
    sleep 0.2
  done
}

run=""
console_shell=false
set --
read -r cmdline </proc/cmdline
for word in $cmdline; do
  case "$word" in
    cellink.run=*) run="${word#cellink.run=}" ;;
    cellink.arg=*) set -- "$@" "${word#cellink.arg=}" ;;
    cellink.console_shell | cellink.console_shell=1) console_shell=true ;;
  esac
done

if [ "$console_shell" = true ]; then
  while read -r line; do say "console: $line"; done </proc/consoles
  console_shell_loop &
fi

if [ -n "$run" ]; then
  say "running $run $*"
  "$run" "$@"
  say "$run exited with status $?"
elif [ "$console_shell" = true ]; then
  say "no cellink.run= on the kernel command line: the shell is on the virtio console"
  while :; do sleep 3600; done
else
  say "no cellink.run= on the kernel command line: starting a shell, exit powers off"
  setsid cttyhack sh
fi

say "uptime $(cut -d' ' -f1 /proc/uptime) s, powering off"
poweroff -f

#!/usr/bin/env bash
# Builds the Linux guest image that cellink's QEMU tests boot: the Debian 12
# cloud kernel, its headers (to build the modules of linux-uio/kmod), and an
# initramfs with busybox, the kernel modules and our static programs.
# docs/guests.md explains the image and how to boot it by hand.
#
# Usage: build-guest-image.sh COMMAND --cache DIR --image DIR [options]
#   fetch                        download and extract the kernel packages
#   module --source KMOD_DIR     build the modules in KMOD_DIR
#   initramfs [--module KO]... [--program FILE]...
#   all --source KMOD_DIR [--program FILE]...   the three in order
#   --allow-unavailable          packages that cannot be had are no error
#
# fetch      resolves the kernel behind linux-image-cloud-amd64 with apt-cache,
#            then `apt-get download`s the image, its headers, the common
#            headers and linux-kbuild, and `dpkg -x`es them into
#            CACHE/<release>_<version>/ (nothing is installed system-wide).
#            Reused while the version stays the same. Links IMAGE/vmlinuz.
# module     copies KMOD_DIR to IMAGE/kmod (kbuild writes next to the
#            sources) and builds its modules there against the fetched
#            headers.
# initramfs  writes IMAGE/initramfs.cpio.gz (newc, gzip): busybox,
#            tools/guest/init.sh as /init, the VFIO chain, uio and the virtio
#            core, ring and console from the kernel package (decompressed
#            when packed as .ko.xz or .ko.zst), IMAGE/kmod/uio_ivshmem.ko and
#            virtio_ivshmem.ko, each --module and each --program (in
#            /usr/bin). Rebuilt only when an input changed.
#
# With --allow-unavailable, a kernel that cannot be resolved or downloaded
# (no package lists, no mirror) and is not cached either is not an error: the
# reason goes to IMAGE/unavailable.txt, which the tests report as their skip
# reason, and module and initramfs do nothing.
#
# Exit status: 0 done, 1 failed, 2 bad usage, 3 the kernel is unavailable.
set -euo pipefail

readonly meta_package=linux-image-cloud-amd64
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly script_dir
# Loaded by /init in this order; a module's dependencies come before it.
# The VFIO chain is the order that worked in a TCG guest (docs/machine-facts.md,
# "Guests"); uio is what uio_ivshmem needs; virtio_ring, virtio and
# virtio_console are what virtio_ivshmem needs to give a console link /dev/hvc0.
readonly kernel_modules=(irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci uio)
readonly virtio_modules=(virtio_ring virtio virtio_console)
# Built from linux-uio/kmod, in load order: uio_ivshmem after uio,
# virtio_ivshmem after the virtio modules.
readonly own_modules=(uio_ivshmem virtio_ivshmem)
readonly exit_unavailable=3

# Set by main from the command line.
cache="" image="" allow_unavailable=false
# The kernel: set by resolve_kernel, or by load_kernel_env from
# CACHE/kernel.env (which write_kernel_env writes).
release="" version="" image_package="" headers_package="" common_package="" kbuild_package=""
kernel="" headers="" modules=""

say() {
  echo "guest-image: $*"
}

fail() {
  echo "guest-image: error: $*" >&2
  exit 1
}

# The kernel packages cannot be had. With --allow-unavailable the reason is
# recorded for the tests and the build goes on without a guest image.
unavailable() {
  if [[ "$allow_unavailable" == true ]]; then
    say "$*"
    say "no guest image: the tests that boot it skip, saying why"
    rm -f "$image/vmlinuz" "$image/initramfs.cpio.gz" "$image/initramfs.cpio.gz.manifest"
    echo "$*" >"$image/unavailable.txt"
    exit 0
  fi
  echo "guest-image: $*" >&2
  exit "$exit_unavailable"
}

usage() {
  sed -n '7,12s/^# \{0,1\}//p' "$0"
}

# --- fetch -------------------------------------------------------------------

# The first package of the Depends line on stdin that matches an extended
# regex.
first_dependency() {
  local pattern="$1"
  grep -m1 '^Depends:' | tr ',' '\n' | sed -E 's/^ *(Depends: *)?//; s/ .*//' |
    grep -m1 -E "^${pattern}\$" || true
}

# Sets release, version and the package names from apt's package lists.
resolve_kernel() {
  local depends headers_info
  depends="$(apt-cache depends "$meta_package" 2>/dev/null)" || return 1
  image_package="$(awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}' <<<"$depends")"
  [[ -n "$image_package" ]] || return 1
  release="${image_package#linux-image-}"
  version="$(apt-cache show --no-all-versions "$image_package" 2>/dev/null |
    awk '$1 == "Version:" {print $2; exit}')"
  headers_package="linux-headers-$release"
  headers_info="$(apt-cache show --no-all-versions "$headers_package" 2>/dev/null)" || return 1
  common_package="$(first_dependency 'linux-headers-[0-9.]+-[0-9]+-common' <<<"$headers_info")"
  kbuild_package="$(first_dependency 'linux-kbuild-[0-9.]+' <<<"$headers_info")"
  [[ -n "$version" && -n "$common_package" && -n "$kbuild_package" ]]
}

# Describes a complete extraction for the other commands. Rewritten only when
# it changes, so that build systems see an unchanged kernel as unchanged.
write_kernel_env() {
  local root="$1" env_file="$cache/kernel.env"
  {
    printf 'release=%q\n' "$release"
    printf 'version=%q\n' "$version"
    printf 'kernel=%q\n' "$root/boot/vmlinuz-$release"
    printf 'headers=%q\n' "$root/usr/src/linux-headers-$release"
    printf 'modules=%q\n' "$root/lib/modules/$release"
  } >"$env_file.tmp"
  if cmp -s "$env_file.tmp" "$env_file"; then
    rm "$env_file.tmp"
  else
    mv "$env_file.tmp" "$env_file"
  fi
}

# The headers packages point at /usr/src and /usr/lib/linux-kbuild-* with
# absolute symlinks and an absolute `include` in the flavour's Makefile;
# re-point them inside the extraction root.
relocate_headers() {
  local root="$1" link target makefile
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    ln -sfn "$root$target" "$link"
  done < <(find "$root" -type l -lname '/*' -print0)
  makefile="$root/usr/src/linux-headers-$release/Makefile"
  [[ -f "$makefile" ]] || fail "$headers_package has no Makefile at ${makefile#"$root"}"
  sed -i -E "s#^include /usr/#include $root/usr/#" "$makefile"
}

# Links IMAGE/vmlinuz to the kernel of CACHE/kernel.env.
publish_kernel() {
  load_kernel_env
  ln -sfn "$kernel" "$image/vmlinuz"
  rm -f "$image/unavailable.txt"
}

# Whether CACHE/kernel.env names a complete extraction, to fall back on.
cached_kernel_usable() {
  [[ -f "$cache/kernel.env" ]] || return 1
  (
    # shellcheck source=/dev/null
    source "$cache/kernel.env"
    [[ -f "$kernel" && -f "$headers/Makefile" ]]
  )
}

cmd_fetch() {
  local root downloads apt_options=() package deb
  if ! resolve_kernel; then
    if cached_kernel_usable; then
      say "apt-cache cannot resolve $meta_package; using the kernel cached before"
      publish_kernel
      return 0
    fi
    unavailable "apt-cache cannot resolve $meta_package and its headers:" \
      "are the Debian 12 package lists present (apt-get update)?"
  fi
  root="$cache/${release}_${version}"
  if [[ -f "$root/.complete" ]]; then
    say "kernel $release ($version) is cached in $root"
    write_kernel_env "$root"
    publish_kernel
    return 0
  fi

  downloads="$cache/debs"
  mkdir -p "$downloads"
  # As root, apt's _apt sandbox user cannot write here; download as root.
  if ((EUID == 0)); then apt_options=(-o APT::Sandbox::User=root); fi
  say "downloading $image_package $headers_package $common_package $kbuild_package ($version)"
  if ! (cd "$downloads" && apt-get -q "${apt_options[@]}" download \
    "$image_package=$version" "$headers_package=$version" \
    "$common_package=$version" "$kbuild_package=$version"); then
    if cached_kernel_usable; then
      say "apt-get download failed; using the kernel cached before"
      publish_kernel
      return 0
    fi
    unavailable "apt-get download failed: is a Debian mirror reachable?"
  fi

  say "extracting into $root"
  rm -rf "$root"
  mkdir -p "$root"
  for package in "$image_package" "$headers_package" "$common_package" "$kbuild_package"; do
    deb="$(find "$downloads" -maxdepth 1 -name "${package}_*.deb" -print | sort | tail -n1)"
    [[ -n "$deb" ]] || fail "apt-get download left no .deb for $package in $downloads"
    dpkg -x "$deb" "$root"
  done
  [[ -f "$root/boot/vmlinuz-$release" ]] || fail "$image_package has no /boot/vmlinuz-$release"
  relocate_headers "$root"
  touch "$root/.complete"
  write_kernel_env "$root"
  # The extraction is the cache: older ones and the .debs are not needed.
  find "$cache" -mindepth 1 -maxdepth 1 -type d -name '*_*' ! -path "$root" -exec rm -rf {} +
  rm -f "$downloads"/*.deb
  publish_kernel
  say "kernel $release ($version) ready"
}

# Loads CACHE/kernel.env. Without one, the kernel is unavailable when fetch
# recorded why, and otherwise fetch has not run.
load_kernel_env() {
  if [[ ! -f "$cache/kernel.env" ]]; then
    if [[ -f "$image/unavailable.txt" ]]; then
      unavailable "$(cat "$image/unavailable.txt")"
    fi
    fail "no kernel in $cache: run '$0 fetch --cache $cache --image $image' first"
  fi
  # shellcheck source=/dev/null
  source "$cache/kernel.env"
}

# --- module ------------------------------------------------------------------

cmd_module() {
  local source="$1" output="$image/kmod" stamp wanted file
  [[ -f "$source/Kbuild" ]] || fail "$source has no Kbuild: not a kernel module directory"
  load_kernel_env
  mkdir -p "$output"
  for file in "$source"/*.c "$source"/*.h "$source"/Kbuild "$source"/Makefile; do
    [[ -f "$file" ]] || continue
    cmp -s "$file" "$output/${file##*/}" || cp "$file" "$output/"
  done
  stamp="$output/.built-for"
  wanted="$release $version $(cd "$output" && cat ./*.c ./Kbuild | sha256sum)"
  local name all_built=true
  for name in "${own_modules[@]}"; do
    [[ -f "$output/$name.ko" ]] || all_built=false
  done
  if [[ "$all_built" == true && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    say "modules ${own_modules[*]} are up to date for $release"
    return 0
  fi
  say "building ${own_modules[*]} against $release (log: $output/build.log)"
  rm -f "$stamp"
  if ! make -C "$headers" M="$output" modules >"$output/build.log" 2>&1; then
    cat "$output/build.log" >&2
    fail "building the module against $headers failed (kbuild needs gcc-12, make and libelf1:" \
      "tools/install-deps.sh installs them)"
  fi
  if grep -qiE 'warning:|^WARNING' "$output/build.log"; then
    cat "$output/build.log" >&2
    fail "the module built with warnings"
  fi
  tail -n 4 "$output/build.log"
  echo "$wanted" >"$stamp"
}

# --- initramfs ---------------------------------------------------------------

# Where a module of the kernel package lives (file names use - or _). A
# module packed as .ko.xz or .ko.zst is decompressed into DIR (busybox
# insmod takes plain .ko files) and that copy is named.
find_kernel_module() {
  local name="$1" dir="$2" found base
  found="$(find "$modules/kernel" \( -name "$name.ko" -o -name "${name//-/_}.ko" \
    -o -name "${name//_/-}.ko" -o -name "$name.ko.xz" -o -name "${name//-/_}.ko.xz" \
    -o -name "$name.ko.zst" -o -name "${name//-/_}.ko.zst" \) -print -quit)"
  [[ -n "$found" ]] || fail "kernel $release has no module $name"
  base="${found##*/}"
  case "$found" in
    *.ko.xz)
      xz -dc "$found" >"$dir/${base%.xz}" || fail "cannot decompress $found (xz-utils)"
      found="$dir/${base%.xz}"
      ;;
    *.ko.zst)
      zstd -qdc "$found" >"$dir/${base%.zst}" || fail "cannot decompress $found (zstd)"
      found="$dir/${base%.zst}"
      ;;
  esac
  echo "$found"
}

# Whether an ELF executable runs without a dynamic loader.
is_static() {
  ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
}

# The modules a .ko needs, from its .modinfo section.
module_dependencies() {
  objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null | tr '\0' '\n' |
    sed -n 's/^depends=//p' | tr ',' '\n' | sed '/^$/d'
}

cmd_initramfs() {
  local output="$image/initramfs.cpio.gz" extra_modules=() programs=()
  while (($# > 0)); do
    case "$1" in
      --module) extra_modules+=("$2") ;;
      --program) programs+=("$2") ;;
    esac
    shift 2
  done
  load_kernel_env
  local busybox=/bin/busybox
  if [[ ! -x "$busybox" ]] || ! is_static "$busybox"; then
    fail "no static busybox at $busybox: apt-get install busybox-static (tools/install-deps.sh)"
  fi

  local module_files=() name file base dependency loaded=" " unpacked="$image/kmod-unpacked"
  rm -rf "$unpacked"
  mkdir -p "$unpacked"
  for name in "${kernel_modules[@]}"; do
    module_files+=("$(find_kernel_module "$name" "$unpacked")")
  done
  module_files+=("$image/kmod/uio_ivshmem.ko")
  for name in "${virtio_modules[@]}"; do
    module_files+=("$(find_kernel_module "$name" "$unpacked")")
  done
  module_files+=("$image/kmod/virtio_ivshmem.ko" "${extra_modules[@]}")
  for file in "${module_files[@]}" "${programs[@]}"; do
    [[ -f "$file" ]] || fail "initramfs input $file does not exist"
  done
  for file in "${programs[@]}"; do
    is_static "$file" || fail "$file is dynamically linked: the guest has no libc, link it -static"
  done
  # busybox insmod does not resolve dependencies: each must load earlier.
  for file in "${module_files[@]}"; do
    base="${file##*/}"
    base="${base%.ko}"
    while IFS= read -r dependency; do
      [[ "$loaded" == *" ${dependency//-/_} "* ]] ||
        fail "module $base needs $dependency, which is not loaded before it"
    done < <(module_dependencies "$file")
    loaded+="${base//-/_} "
  done

  # Rebuild only when an input changed: the inputs' digests are the manifest.
  local manifest
  manifest="$(sha256sum "$script_dir/init.sh" "$0" "$busybox" "${module_files[@]}" \
    "${programs[@]}" | sed 's/ .*\// /')"
  if [[ -f "$output" && -f "$output.manifest" && "$(cat "$output.manifest")" == "$manifest" ]]; then
    say "initramfs $output is up to date"
    return 0
  fi

  say "building initramfs $output"
  local staging="$output.staging" applet
  rm -rf "$staging"
  mkdir -p "$staging"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc/cellink,lib/modules/cellink}
  cp "$busybox" "$staging/bin/busybox"
  while IFS= read -r applet; do
    [[ -e "$staging/$applet" ]] || ln -s /bin/busybox "$staging/$applet"
  done < <("$busybox" --list-full)
  install -m 0755 "$script_dir/init.sh" "$staging/init"
  : >"$staging/etc/cellink/modules"
  for file in "${module_files[@]}"; do
    base="${file##*/}"
    cp "$file" "$staging/lib/modules/cellink/$base"
    echo "${base%.ko}" >>"$staging/etc/cellink/modules"
  done
  for file in "${programs[@]}"; do install -m 0755 "$file" "$staging/usr/bin/"; done

  # newc is the format the kernel unpacks; every entry is owned by root.
  (cd "$staging" && find . -mindepth 1 | LC_ALL=C sort |
    "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -n -6 >"$output.tmp"
  mv "$output.tmp" "$output"
  echo "$manifest" >"$output.manifest"
  rm -rf "$staging"
  say "initramfs $output: $(du -k "$output" | cut -f1) KiB," \
    "${#module_files[@]} modules, ${#programs[@]} program(s)"
}

# --- command line ------------------------------------------------------------

main() {
  (($# > 0)) || {
    usage >&2
    exit 2
  }
  local command="$1" source="" extra=()
  shift
  if [[ "$command" == -h || "$command" == --help ]]; then
    usage
    exit 0
  fi
  while (($# > 0)); do
    case "$1" in
      --allow-unavailable)
        allow_unavailable=true
        shift
        continue
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      --cache | --image | --source | --module | --program)
        (($# >= 2)) || {
          echo "build-guest-image.sh: $1 needs a value" >&2
          exit 2
        }
        case "$1" in
          --cache) cache="$2" ;;
          --image) image="$2" ;;
          --source) source="$2" ;;
          *) extra+=("$1" "$2") ;;
        esac
        shift 2
        ;;
      *)
        echo "build-guest-image.sh: unknown argument '$1'" >&2
        usage >&2
        exit 2
        ;;
    esac
  done
  if [[ -z "$cache" || -z "$image" ]]; then
    echo "build-guest-image.sh: --cache and --image are required" >&2
    exit 2
  fi
  mkdir -p "$cache" "$image"
  cache="$(cd "$cache" && pwd)"
  image="$(cd "$image" && pwd)"
  # One build at a time per cache: a second one waits here.
  exec 9>"$cache/.lock"
  flock 9

  case "$command" in
    fetch) cmd_fetch ;;
    module) cmd_module "$source" ;;
    initramfs) cmd_initramfs "${extra[@]}" ;;
    all)
      # Each step runs in a subshell: an unavailable kernel ends it early.
      (cmd_fetch)
      [[ -f "$image/unavailable.txt" ]] && exit 0
      (cmd_module "$source")
      (cmd_initramfs "${extra[@]}")
      load_kernel_env
      say "image ready: $image/vmlinuz (Linux $release) + $image/initramfs.cpio.gz"
      ;;
    *)
      echo "build-guest-image.sh: unknown command '$command'" >&2
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"

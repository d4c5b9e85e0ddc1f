#!/usr/bin/env bash
# Installs the Debian 12 packages cellink needs to build, test and run its
# QEMU demos. Safe to run repeatedly: when every package is already installed
# it only says so, without touching apt.
#
# Usage: tools/install-deps.sh [--optional]
#   --optional  also install the comparison baselines for benchmarks/:
#               dpdk-dev (rte_ring) and iceoryx (iox-roudi plus the POSH
#               headers), and gnuplot-nox for the plots of `cellink bench
#               --report`. They are large and nothing else needs them.
#
# Runs apt-get as root, through sudo when not already root.
set -euo pipefail

usage() {
  sed -n '6,10s/^# \{0,1\}//p' "$0"
}

required_packages=(
  # toolchain and build
  build-essential cmake ninja-build pkg-config git
  # libraries
  libboost-dev capnproto libcapnp-dev libtomlplusplus-dev libcli11-dev libfmt-dev libspdlog-dev
  nlohmann-json3-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # guests for the QEMU tests and demos; libelf1 runs the guest kernel's
  # objtool when tools/guest/build-guest-image.sh builds uio_ivshmem.ko
  qemu-system-x86 busybox-static libelf1
  # fuzzing (the `fuzz` preset) and the formatting and lint tools
  clang libclang-rt-14-dev libfuzzer-14-dev clang-format clang-tidy
)
optional_packages=(dpdk-dev iceoryx libiceoryx-posh-dev gnuplot-nox)

with_optional=false
for arg in "$@"; do
  case "$arg" in
    --optional) with_optional=true ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "install-deps.sh: unknown argument '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done

packages=("${required_packages[@]}")
if [[ "$with_optional" == true ]]; then
  packages+=("${optional_packages[@]}")
fi

missing=()
for package in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)"
  if [[ "$status" != installed ]]; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "all dependencies present"
  exit 0
fi

if ((EUID == 0)); then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-deps.sh: need root to install ${missing[*]}, and sudo is not available" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"

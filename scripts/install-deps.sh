#!/usr/bin/env bash
# Installs what building, booting and testing Tessera need on a Debian 12 host.
# Idempotent: when everything is there it changes nothing and prints nothing.
set -euo pipefail

# Host tools only. The image's own packages (kernel, busybox, systemd-boot stub) are fetched
# and unpacked by `tessera image build` at the versions pinned in image/packages.lock.
PACKAGES=(
  qemu-system-x86 qemu-utils ipxe-qemu ovmf   # VMs: TCG, qemu-img, PXE ROM, UEFI firmware
  musl-tools                                   # musl-gcc for the C parts of the static binary
  busybox-static                               # a static /bin/busybox for the runner's own boot tests
  binutils zstd cpio kmod                      # objcopy, inspection of images and modules
  dpkg-dev                                     # dpkg-deb to unpack the pinned packages
  openssl curl iproute2                        # checks with real clients
  dosfstools mtools genisoimage e2fsprogs      # NoCloud volumes for the user-data tests
  openssh-client                               # ssh, ssh-keygen: the SSH console test's client
  umoci crun                                   # OCI image layouts and the reference runtime: container tests
  g++                                          # libFuzzer (C++, built by libfuzzer-sys): make fuzz
)

missing_packages() {
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
}
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
# Two passes: installing one package can remove another the machine came with (Debian's
# qemu-system-x86 7.2 removes a backported qemu-utils 10, and qemu-img with it), so what
# the first pass left missing is installed again at the versions that fit together.
updated=""
for pass in 1 2; do
  missing_packages
  ((${#missing[@]})) || break
  echo "[deps] installing ${missing[*]}"
  [ -n "$updated" ] || { $sudo apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
done
missing_packages
if ((${#missing[@]})); then
  echo "[deps] still missing after installing: ${missing[*]} (apt-get install ${missing[*]} says why)" >&2
  exit 1
fi
# `apt-get download` of the pinned packages needs package lists.
if [ -z "$(ls -A /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ]; then
  echo "[deps] apt-get update (no package lists yet)"
  $sudo apt-get update -qq
fi
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  echo "[deps] adding the x86_64-unknown-linux-musl Rust target"
  rustup target add x86_64-unknown-linux-musl
fi

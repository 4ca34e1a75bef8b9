#!/usr/bin/env bash
# Proves the README's two commands on a Debian 12 where nothing was installed by hand: a new
# chroot made by mmdebstrap with only what a fresh machine of this kind has (the base system,
# gcc, make, git, python3, qemu-utils; the Rust toolchain is the machine's own, bind-mounted),
# a clean clone of this repository's HEAD in it, then the commands, run as root inside.
#
#   scripts/fresh-machine.sh                        # make demo, then make test
#   scripts/fresh-machine.sh 'make test'            # any command line, run in the clone
#   FRESH_ROOT=/var/tmp/x scripts/fresh-machine.sh  # where the chroot lives (made anew each run)
#
# The chroot uses the host's apt sources (/etc/apt/sources.list.d/debian.sources or
# /etc/apt/sources.list), so it reaches exactly the package mirror the host does.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${FRESH_ROOT:-/var/tmp/tessera-fresh}
commands=${1:-make demo && make test}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin

[ "$(id -u)" = 0 ] || { echo "fresh-machine: run as root (chroot, mounts)" >&2; exit 2; }
[ -d "$rustup_home/toolchains" ] || { echo "fresh-machine: no Rust toolchain in $rustup_home" >&2; exit 2; }
if ! command -v mmdebstrap >/dev/null; then
  echo "[fresh] installing mmdebstrap"
  apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind SRC DEST [ro]
  mkdir -p "$2"
  mount --rbind "$1" "$2"
  mount --make-rslave "$2"
  mounted+=("$2")
  [ "${3:-}" != ro ] || mount -o remount,bind,ro "$2"
}

# A new root every run: what an earlier run installed must not help this one.
if [ -e "$root" ]; then
  findmnt -R -n -o TARGET "$root" | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$root"
fi
echo "[fresh] mmdebstrap bookworm into $root"
mmdebstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,make,git,python3,qemu-utils,procps \
  bookworm "$root" "$sources"

echo "[fresh] clean clone of $(git -C "$repo" rev-parse --short HEAD)"
git clone -q --no-local "$repo" "$root/work/tessera"
cp /etc/resolv.conf "$root/etc/resolv.conf"

bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
mkdir -p "$root/run" "$root/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$root/run" && mounted+=("$root/run")
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp" && mounted+=("$root/tmp")
bind "$rustup_home" "$root/opt/rustup"
bind "$cargo_bin" "$root/opt/cargo-bin" ro

echo "[fresh] running in the chroot: $commands"
start=$(date +%s)
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo \
  PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/bash -c "cd /work/tessera && $commands"
echo "[fresh] passed in $(($(date +%s) - start)) s: $commands"

#!/usr/bin/env bash
# Install everything h2k needs on a fresh Debian machine: disk tools, a Python venv and buf.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# postgresql: the tests start their own server (replicas sharing one store).
APT_PACKAGES=(qemu-utils qemu-system-common fdisk e2fsprogs xfsprogs util-linux mount kmod postgresql)
# tests/libvirt start their own libvirtd (in private mount and network namespaces, so nothing of
# the host's is used or changed) and boot the generated domains under TCG: libvirt-clients has
# virsh and virt-xml-validate (which runs libxml2-utils' xmllint), ovmf ships the UEFI builds and
# their /usr/share/qemu/firmware descriptors, iptables is what libvirt's network driver calls to
# start even an isolated network. Not libvirt-daemon-system: it would start the host's daemon.
APT_PACKAGES+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 ovmf
  libxml2-utils iptables)
# tests/boot build real Debian guests (debootstrap, GRUB's BIOS and EFI images, a FAT ESP with
# mtools, the tree cached as .tar.zst) and boot them under qemu-system-x86 with ovmf. mtools is
# also what the agent's uefi_fallback fix uses on an ESP when the node's kernel has no vfat.
# zstd and lz4 also decode the initramfs images inspection lists (guest_info).
APT_PACKAGES+=(debootstrap grub-pc-bin grub-efi-amd64-bin dosfstools mtools zstd lz4)
# nodejs npm: only to install buf (below), which is published on npm. Checked by command, not by
# package: a node from elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.h2k-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# buf lints the contract and checks it for breaking changes (scripts/check_proto.sh). Pinned, and
# project-local so that it never depends on what else is installed on the machine.
BUF_VERSION=1.75.0
BUF=.tools/node_modules/.bin/buf
if [ "$("$BUF" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
  echo "setup: installing buf $BUF_VERSION into .tools"
  npm install --prefix .tools --save-exact --no-audit --no-fund --loglevel=error \
    "@bufbuild/buf@$BUF_VERSION" >/dev/null
  [ "$("$BUF" --version)" = "$BUF_VERSION" ] || { echo "setup: $BUF is not buf $BUF_VERSION" >&2; exit 1; }
fi

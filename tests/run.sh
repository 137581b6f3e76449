#!/usr/bin/env bash
# Runs the whole ReplicaTools test suite against a real lab on loopback addresses.
# Run as root on Debian/Ubuntu, it first installs the lab packages (QEMU, libvirt, NBD, tgt, DRBD utils, sshd, btrfs,
# fio, nfs-ganesha). The tests start every daemon they need themselves, on dynamic ports, and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

LAB_PACKAGES=(
  openssh-server openssh-client util-linux coreutils openssl libpam-modules
  qemu-utils qemu-system-x86 qemu-block-extra
  nbd-server nbd-client nbdkit libnbd-bin python3-libnbd iproute2 procps
  tgt libiscsi-bin drbd-utils
  btrfs-progs fio socat iputils-ping
  nfs-ganesha nfs-ganesha-vfs rpcbind
  libvirt-daemon-system libvirt-clients
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for package in "${LAB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing lab packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  mkdir -p /run/sshd
elif [ "$(id -u)" != 0 ]; then
  echo "Not root: skipping package installation; the lab needs: ${LAB_PACKAGES[*]}" >&2
fi

dotnet build ReplicaTools.sln -c Release -warnaserror -nologo -v quiet
dotnet test ReplicaTools.sln -c Release --no-build -nologo --logger "console;verbosity=normal" "$@"

# The Pester suite needs PowerShell 7.4+ and Pester 5; where they exist, run it too.
if command -v pwsh >/dev/null 2>&1; then
  pwsh -NoLogo -NoProfile -Command '
    if (-not (Get-Module -ListAvailable Pester | Where-Object Version -ge 5.0)) { Write-Warning "Pester 5 is not installed; skipping the Pester suite."; exit 0 }
    $result = Invoke-Pester -Path ./tests/Pester -Output Detailed -PassThru
    exit $result.FailedCount'
fi

#!/usr/bin/env bash
# Runs the whole ReplicaTools test suite against a real lab on loopback addresses: every xunit test, then every Pester
# suite in one Invoke-Pester run in real PowerShell. Ends with one line "N passed, N failed" over both.
#
# Run as root on Debian/Ubuntu, it first installs the lab packages (QEMU, libvirt, NBD, tgt, DRBD utils, sshd, btrfs,
# fio, nfs-ganesha). It installs PowerShell 7.6.9 as a .NET global tool (~/.dotnet/tools/pwsh) and Pester 5.7.1 from the
# NuGet feed named in nuget.config (not the PowerShell Gallery) when they are missing; if either cannot be installed, the
# run fails. The tests start every daemon they need themselves, on dynamic ports, and stop them afterwards.
# Arguments are passed to `dotnet test` (e.g. --filter FullyQualifiedName~Nbd).
set -euo pipefail
cd "$(dirname "$0")/.."

PWSH_VERSION=7.6.9
PESTER_VERSION=5.7.1
LAB_PACKAGES=(
  openssh-server openssh-client util-linux coreutils openssl libpam-modules
  qemu-utils qemu-system-x86 qemu-block-extra
  nbd-server nbd-client nbdkit libnbd-bin python3-libnbd iproute2 procps
  tgt libiscsi-bin drbd-utils
  btrfs-progs fio socat iputils-ping
  nfs-ganesha nfs-ganesha-vfs rpcbind
  libvirt-daemon-system libvirt-clients libxml2-utils
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

# PowerShell, as the .NET global tool: ~/.dotnet/tools/pwsh. `dotnet tool update` installs it when it is missing.
export PATH="$PATH:$HOME/.dotnet/tools"
if ! pwsh -NoProfile -Command "exit [int](\$PSVersionTable.PSVersion -ne [version]'$PWSH_VERSION')" >/dev/null 2>&1; then
  echo "Installing PowerShell $PWSH_VERSION (.NET tool) into $HOME/.dotnet/tools"
  dotnet tool update --global PowerShell --version "$PWSH_VERSION" >/dev/null
fi
pwsh -NoProfile -Command "if (\$PSVersionTable.PSVersion -ne [version]'$PWSH_VERSION') { exit 1 }" ||
  { echo "FAILED: PowerShell $PWSH_VERSION could not be installed; the Pester suites cannot run." >&2; exit 1; }

# Pester, from the NuGet v3 feed in nuget.config. Its package is laid out for Chocolatey: the module is in tools/.
pwsh -NoProfile -NonInteractive -Command "
  \$ErrorActionPreference = 'Stop'
  if (Get-Module -ListAvailable Pester | Where-Object Version -eq '$PESTER_VERSION') { exit 0 }
  \$feed = ([xml](Get-Content ./nuget.config)).configuration.packageSources.add | Where-Object value -like 'http*' | Select-Object -First 1
  if (-not \$feed) { throw 'nuget.config names no http(s) package source to install Pester from.' }
  Write-Host \"Installing Pester $PESTER_VERSION from \$(\$feed.value)\"
  if (-not (Get-PSResourceRepository -Name ReplicaToolsNuGet -ErrorAction SilentlyContinue)) {
    Register-PSResourceRepository -Name ReplicaToolsNuGet -Uri \$feed.value -Trusted
  }
  \$download = Join-Path ([IO.Path]::GetTempPath()) ('pester-' + [guid]::NewGuid())
  New-Item -ItemType Directory \$download | Out-Null
  try {
    Save-PSResource -Name Pester -Version '$PESTER_VERSION' -Repository ReplicaToolsNuGet -Path \$download -TrustRepository
    \$tools = Get-ChildItem \$download -Recurse -Directory -Filter tools | Where-Object { Test-Path (Join-Path \$_.FullName 'Pester.psd1') } | Select-Object -First 1
    if (-not \$tools) { throw 'The Pester package has no tools/Pester.psd1.' }
    \$modules = (\$env:PSModulePath -split [IO.Path]::PathSeparator)[0]
    \$target = Join-Path \$modules 'Pester/$PESTER_VERSION'
    New-Item -ItemType Directory (Split-Path \$target) -Force | Out-Null
    Copy-Item \$tools.FullName \$target -Recurse -Force
  } finally { Remove-Item \$download -Recurse -Force -ErrorAction SilentlyContinue }
  Import-Module Pester -RequiredVersion '$PESTER_VERSION'
" || { echo "FAILED: Pester $PESTER_VERSION could not be installed; the Pester suites cannot run." >&2; exit 1; }

# Build once: the solution (xunit) and the laid-out module the Pester suites import (out/ReplicaTools).
dotnet build ReplicaTools.sln -c Release -warnaserror -nologo -v quiet

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
xunit_status=0
dotnet test ReplicaTools.sln -c Release --no-build -nologo --logger "console;verbosity=normal" \
  --logger "trx;LogFileName=xunit.trx" --results-directory "$results" "$@" || xunit_status=$?

# Every Pester suite in one run; a failed test, block or container fails it. Counts go to a file for the summary.
pester_status=0
pwsh -NoLogo -NoProfile -NonInteractive -Command "
  Import-Module Pester -RequiredVersion '$PESTER_VERSION'
  \$configuration = New-PesterConfiguration
  \$configuration.Run.Path = './tests/Pester'
  \$configuration.Run.PassThru = \$true
  \$configuration.Output.Verbosity = 'Detailed'
  \$result = Invoke-Pester -Configuration \$configuration
  \$failed = \$result.FailedCount + \$result.FailedBlocksCount + \$result.FailedContainersCount
  Set-Content -Path '$results/pester.counts' -Value \"\$(\$result.PassedCount) \$failed \$(\$result.Duration.TotalSeconds)\"
  exit ([int](\$failed -gt 0 -or \$result.Result -ne 'Passed'))" || pester_status=$?

read -r xunit_passed xunit_failed < <(pwsh -NoProfile -NonInteractive -Command "
  \$trx = Get-ChildItem '$results' -Recurse -Filter xunit.trx | Select-Object -First 1
  if (-not \$trx) { '0 1'; exit }
  \$counters = ([xml](Get-Content \$trx.FullName)).TestRun.ResultSummary.Counters
  '{0} {1}' -f \$counters.passed, ([int]\$counters.failed + [int]\$counters.error + [int]\$counters.timeout + [int]\$counters.aborted)")
if [ -s "$results/pester.counts" ]; then
  read -r pester_passed pester_failed pester_seconds < "$results/pester.counts"
else
  pester_passed=0; pester_failed=1; pester_seconds=0   # the Pester process died before it could report
fi

echo "xunit: $xunit_passed passed, $xunit_failed failed; Pester: $pester_passed passed, $pester_failed failed (${pester_seconds%.*} s)"
echo "$((xunit_passed + pester_passed)) passed, $((xunit_failed + pester_failed)) failed"
if [ "$xunit_status" != 0 ] || [ "$pester_status" != 0 ] || [ "$xunit_failed" != 0 ] || [ "$pester_failed" != 0 ]; then
  exit 1
fi

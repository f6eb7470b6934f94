#!/usr/bin/env bash
# Install rtnode on a Debian/Ubuntu machine.
#
#   scripts/setup.sh              runtime: what the node itself needs (a virtual environment in
#                                 .venv with rtnode); nothing else lands on the host
#   scripts/setup.sh --dev        also the test peers (DCMTK, Orthanc, dicom3tools, Redis,
#                                 Chromium, PostgreSQL, plastimatch) and the test tools (pytest)
#   scripts/setup.sh --ml         also torch (CPU wheel, pinned), nnU-Net v2 and TotalSegmentator
#   scripts/setup.sh --print-plan [--dev] [--ml]
#                                 print what would be installed, install nothing
#
# Services that test peers ship (Orthanc, Redis, PostgreSQL) are installed with a policy-rc.d
# that forbids starting them, and are disabled afterwards where systemd runs: a clinical host
# must not silently get a second PACS on 4242/8042. Tests start their own copies on free ports.
#
# Re-running it is harmless. PYTHON selects the interpreter (default python3, 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_DEV=0
WITH_ML=0
PLAN_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --dev) WITH_DEV=1 ;;
    --ml) WITH_ML=1 ;;
    --print-plan) PLAN_ONLY=1 ;;
    *) echo "usage: scripts/setup.sh [--dev] [--ml] [--print-plan]" >&2; exit 2 ;;
  esac
done

# What the node needs at run time (python3-venv: Debian's python3 makes no venv without it).
RUNTIME_APT=(python3-venv)
# Test and development peers only; never needed to run the node.
#   dcmtk (storescu/findscu/movescu/getscu), orthanc (a PACS), dicom3tools (dciodvfy),
#   redis-server (queue scale-out), chromium + chromium-driver (QC report rendering),
#   postgresql (index on PostgreSQL), plastimatch (reference DVH/structure tools)
#   openssl (throwaway CA and certificates for the TLS tests)
DEV_APT=(dcmtk orthanc dicom3tools redis-server chromium chromium-driver postgresql plastimatch
         openssl)
# Services the dev packages ship: never started by the install, never left enabled.
DEV_SERVICES=(orthanc redis-server postgresql)

# pip install arguments, one install command each (shell words, quoted as written here)
RUNTIME_PIP='-e .'
DEV_PIP='-e ".[test,redis,postgres]"'
# torch pinned in the same command, or the resolver pulls a multi-GB CUDA build via timm.
ML_PIP='-e ".[ml]" "torch==2.13.0"'

apt_wanted=("${RUNTIME_APT[@]}")
pip_steps=("$RUNTIME_PIP")
if [ "$WITH_DEV" -eq 1 ]; then
  apt_wanted+=("${DEV_APT[@]}")
  pip_steps+=("$DEV_PIP")
fi
if [ "$WITH_ML" -eq 1 ]; then pip_steps+=("$ML_PIP"); fi

if [ "$PLAN_ONLY" -eq 1 ]; then
  echo "apt: ${apt_wanted[*]}"
  for step in "${pip_steps[@]}"; do echo "pip: $step"; done
  if [ "$WITH_DEV" -eq 1 ]; then echo "services disabled: ${DEV_SERVICES[*]}"; fi
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in "${apt_wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # policy-rc.d exit 101 = "action forbidden": packaged services are not started by the install
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
  fi
  trap '[ "$own_policy" -eq 1 ] && $SUDO rm -f "$policy"' EXIT
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$own_policy" -eq 1 ]; then $SUDO rm -f "$policy"; own_policy=0; fi
fi
if [ "$WITH_DEV" -eq 1 ] && [ -d /run/systemd/system ]; then
  for svc in "${DEV_SERVICES[@]}"; do
    if systemctl list-unit-files "$svc.service" >/dev/null 2>&1; then
      $SUDO systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
    fi
  done
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "rtnode needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
for step in "${pip_steps[@]}"; do
  eval ".venv/bin/python -m pip install --quiet --disable-pip-version-check $step"
done
echo "rtnode installed: $(.venv/bin/rtnode --version)"

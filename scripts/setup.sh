#!/usr/bin/env bash
# Install rtnode on a fresh Debian/Ubuntu machine:
#   - the DICOM peers rtnode works with and is tested against (DCMTK, Orthanc, dicom3tools' dciodvfy,
#     Redis for scale-out) and Chromium (QC report rendering tests), from the distribution;
#   - a virtual environment in .venv with rtnode and its test tools.
#
#   scripts/setup.sh          core install (no segmentation models)
#   scripts/setup.sh --ml     also torch (CPU wheel, pinned), nnU-Net v2 and TotalSegmentator
#
# Re-running it is harmless. PYTHON selects the interpreter (default python3, 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_ML=0
for arg in "$@"; do
  case "$arg" in
    --ml) WITH_ML=1 ;;
    *) echo "usage: scripts/setup.sh [--ml]" >&2; exit 2 ;;
  esac
done

# chromium: the tests render QC reports headless and look at the screenshot
# postgresql: the scale-out tests start a throw-away server (initdb in a temp folder)
APT_PACKAGES=(dcmtk orthanc dicom3tools redis-server chromium chromium-driver postgresql)
# plastimatch: the peer scripts/bench/body.py measures builtin:body against
APT_PACKAGES+=(plastimatch)
# openssl: the TLS tests make a throwaway CA and certificates with its CLI
APT_PACKAGES+=(openssl)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "rtnode needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,postgres]"
if [ "$WITH_ML" -eq 1 ]; then
  # torch pinned in the same command, or the resolver pulls a multi-GB CUDA build via timm.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[ml]" "torch==2.13.0"
fi
echo "rtnode installed: $(.venv/bin/rtnode --version)"

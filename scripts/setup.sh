#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: system libraries for napari under Xvfb, then a virtual environment
# in .venv with torch and this package. Safe to run again.
#
# Which torch build (the last lines say which one you got):
#   default                 the CPU build, from https://download.pytorch.org/whl/cpu (no GBs of CUDA libraries);
#                           where that index cannot be reached, torch==2.13.0 from pip's configured index
#   TORCH_BUILD=cuda        the default PyPI wheel, which on Linux x86_64 is a CUDA build (several GB)
#   TORCH_INDEX_URL=URL     any other index, e.g. https://download.pytorch.org/whl/cu126 for one CUDA version
# SKIP_APT=1 skips the system packages (the command line works without them; napari and the tests need them).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
PYTHON=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

APT_PACKAGES=(xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0 libdbus-1-3 libfontconfig1)
missing=()
if ! command -v "$PYTHON" >/dev/null; then
  missing+=(python3 python3-venv)
elif ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then  # Debian ships venv's pip in python3-venv
  missing+=("$("$PYTHON" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')")
fi
if [ "${SKIP_APT:-0}" != 1 ] && command -v dpkg-query >/dev/null; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    reason=$(command -v sudo >/dev/null && echo "sudo asks for a password" || echo "sudo is not installed")
    echo "setup: this script cannot install them (not root, and $reason). As an administrator, run:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    echo "setup: then run 'bash scripts/setup.sh' again." >&2
    exit 1
  fi
  echo "setup: installing system packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
  echo "setup: napari-cycleinr needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  echo "setup: run again with PYTHON=python3.11 (or newer) bash scripts/setup.sh" >&2
  exit 1
fi
# A .venv without pip is what an earlier run left where python3-venv was missing: make it again.
.venv/bin/python -m pip --version >/dev/null 2>&1 || "$PYTHON" -m venv --clear .venv
"${PIP[@]}" --upgrade pip

torch_build() {  # "2.13.0+cpu CPU": the installed torch and whether it was built with CUDA
  .venv/bin/python -c "import torch; print(torch.__version__, 'CUDA' if torch.version.cuda else 'CPU')" 2>/dev/null
}
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  source_args=(--index-url "$TORCH_INDEX_URL") wanted=any
elif [ "${TORCH_BUILD:-cpu}" = cuda ]; then
  source_args=() wanted=CUDA
elif .venv/bin/python -c "import urllib.request as u; u.urlopen('$CPU_INDEX/torch/', timeout=10)" 2>/dev/null
then
  source_args=(--index-url "$CPU_INDEX") wanted=CPU
else
  echo "setup: $CPU_INDEX cannot be reached; installing torch==$TORCH_VERSION from pip's configured index"
  source_args=() wanted=any
fi
installed=$(torch_build || true)
case "$wanted:$installed" in  # pip keeps an installed 2.13.0 of the other build: replace it
  CPU:*CUDA | CUDA:*+cpu\ CPU)
    echo "setup: replacing torch $installed with the $wanted build"
    .venv/bin/python -m pip uninstall -q -y torch ;;
esac
"${PIP[@]}" "torch==$TORCH_VERSION" ${source_args[@]+"${source_args[@]}"}
"${PIP[@]}" -e ".[test]"
echo "setup: torch $(torch_build) build; $(.venv/bin/python -c "
import torch
print('GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'runs on the CPU')")"
echo "setup: ready (.venv)"

#!/usr/bin/env bash
# Make sure Debian's python3 can import QGIS (and with it GDAL's bindings, numpy and PyQt5).
# Installs Debian's packages when we are root; otherwise says exactly what to install.
set -euo pipefail
if /usr/bin/python3 -c 'import qgis.core' 2>/dev/null && command -v Xvfb >/dev/null; then
    exit 0
fi
packages="qgis python3-qgis xvfb imagemagick"
if [ "$(id -u)" -ne 0 ]; then
    echo "QGIS's Python bindings are missing. Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $packages" >&2
    exit 1
fi
echo "installing QGIS from Debian's packages (about a minute) ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $packages >/dev/null
/usr/bin/python3 -c 'import qgis.core' 

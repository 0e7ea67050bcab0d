#!/bin/bash
# Installs what thinvol needs on Debian (as root): system packages when missing, npm packages,
# the build, and the mount helper so that `mount -t fuse.thinvol POOL MNT` works.
set -euo pipefail
cd "$(dirname "$0")/.."

# build-essential and python3: node-gyp compiles the native addon during npm install.
# libfuse3-dev and pkg-config: the addon's libfuse3 binding (the default) is built only where
# pkg-config finds fuse3; fuse3 brings fusermount3 and /dev/fuse's rules. libfuse2 stays for
# fuse-native, the fallback binding (thinvol mount --fuse libfuse2).
PKGS="libfuse2 libfuse3-dev fuse3 pkg-config e2fsprogs xfsprogs qemu-utils qemu-system-common fio util-linux build-essential python3"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# npm ci: the lock file is the install (reproducible installs).
npm ci --no-audit --no-fund
npm run build

ln -sf "$PWD/bin/mount.fuse.thinvol" /usr/sbin/mount.fuse.thinvol
echo "thinvol installed: ./bin/thinvol --help"

#!/bin/bash
# One command on a fresh Debian machine: install everything, then create the default pool
# (a sparse backend file) and a demo volume, mount it, and print what to do next.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
./bin/thinvol quickstart

#!/bin/sh
# quickstart.sh - on a fresh Debian 12 machine (as root): install dependencies,
# build, and run the demo.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/tools/install-deps.sh"
"$top/tools/build.sh"
"$top/tools/demo.sh"

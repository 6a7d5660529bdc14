#!/usr/bin/env bash
# Install the system packages (real data, typefaces) and the Python stack pinned in constraints.txt.
set -euo pipefail
python=${1:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=$(for p in $(cat "$here/.ci/apt-packages.txt"); do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
"$python" -m pip install -q -c "$here/constraints.txt" -e "$here[dev]"

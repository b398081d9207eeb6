#!/usr/bin/env bash
# Optional system packages: a fast OpenBLAS for MLX on Linux CPU, and Chromium for the report's browser test.
# Never fails the build: without them the project still works (slower BLAS; browser tests skip).
set -u
[ "$(uname -s)" = "Linux" ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
[ "$(id -u)" = "0" ] || { echo "note: not root; skipping optional apt packages (libopenblas0-pthread, chromium)"; exit 0; }
want=()
dpkg -s libopenblas0-pthread >/dev/null 2>&1 || want+=(libopenblas0-pthread)
if [ "${PSILOSCOPE_SKIP_BROWSER:-0}" != "1" ]; then
  dpkg -s chromium >/dev/null 2>&1 || want+=(chromium)
  dpkg -s chromium-driver >/dev/null 2>&1 || want+=(chromium-driver)
fi
[ ${#want[@]} -eq 0 ] && exit 0
echo "installing optional system packages: ${want[*]}"
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}"; } >/dev/null 2>&1 \
  || echo "note: could not install ${want[*]}; continuing without them"
exit 0

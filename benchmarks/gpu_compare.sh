#!/usr/bin/env bash
# The same APIs on the CPU and on the GPU of one machine, and what differs between them (M7).
#
#   benchmarks/gpu_compare.sh OUT_DIR [xentc run options...]
#
# Writes OUT_DIR/cpu and OUT_DIR/cuda (two `xentc run` directories, the same cases, APIs and
# dtypes), OUT_DIR/diff.md (`xentc diff cpu cuda`: rows whose status changed, or whose max ULP
# error moved by a factor of 2 or more) and OUT_DIR/site (`xentc report cuda --against cpu`).
# Both runs use the frameworks installed on this machine, so the two sides differ only by the
# device: the kernels. The GPU run needs each framework's GPU build; one that sees no GPU is
# `unsupported` there (and left out of the diff). XENTC (default: xentc) is the command.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [xentc run options...]" >&2
    exit 2
fi
out=$1
shift
read -r -a xentc <<<"${XENTC:-xentc}"
for dev in cpu cuda; do
    start=$(date +%s)
    "${xentc[@]}" run --device "$dev" --out "$out/$dev" -q "$@"
    echo "$dev run: $(($(date +%s) - start)) s"
done
# exit status 1 of diff means "something broke on the GPU": information here, not an error
"${xentc[@]}" diff "$out/cpu" "$out/cuda" >"$out/diff.md" || [ $? -eq 1 ]
"${xentc[@]}" report "$out/cuda" --against "$out/cpu" --out "$out/site" --no-plots

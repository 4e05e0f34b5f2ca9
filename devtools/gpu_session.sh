#!/usr/bin/env bash
# One GPU session's measurements, in the order their numbers matter: the CUDA bench (every CUDA row and target of
# docs/performance.md, under 9 minutes with compilation), its section of the page, then the two-epoch rehearsal of
# every model in params.yaml. Needs python3 with torch, torchvision, numpy, pillow, pyyaml, scipy (no mlflow, no
# dvc: the rehearsal points tracking at a closed port). Everything it writes is also copied to $OUT when set.
#
#   bash devtools/gpu_session.sh                # on the GPU machine
#   DEVICE=cpu PY=.venv/bin/python REHEARSE="--models fcn deeplabv3plus --train 16 --val 4 --sizes 64 96" \
#     bash devtools/gpu_session.sh
#                                               # the same path on a CPU, small (2 min), to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
STEP=${STEP:-all}   # bench | rehearse | all: one device call each when time is short

if [[ $STEP == bench || $STEP == all ]]; then
  "$PY" -m tools.bench --device "$DEVICE" --out bench/results.json
  "$PY" -m tools.bench_page --results bench/results.json
fi
if [[ $STEP == rehearse || $STEP == all ]]; then
  # shellcheck disable=SC2086  # REHEARSE is a list of options
  "$PY" -m tools.rehearse --device "$DEVICE" --out rehearsal/results.json ${REHEARSE:-}
fi
if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT/docs/bench"
  for file in bench/results.json rehearsal/results.json docs/performance.md; do
    [[ -f $file ]] && mkdir -p "$OUT/$(dirname "$file")" && cp "$file" "$OUT/$file"
  done
  cp docs/bench/*.json "$OUT/docs/bench/"
fi

#!/usr/bin/env bash
# docs/scaling.md: all 13,233 LFW faces through MobileFaceNet (ONNX Runtime fp32) on each engine, ROUNDS times.
#   ENGINES="local ray1 ray2" scripts/scaling_engines.sh [ROUNDS]      (run from the repository root)
# Prints the wall time of each command; each run's infer_summary.json is kept as out_ENGINE_ROUND.json.
set -euo pipefail
if [ "${1:-}" = "--help" ]; then sed -n 2,4p "$0"; exit 0; fi
rounds=${1:-1}
data=${DATA:-../shared/data}
work=${WORK:-runs/scaling}
mkdir -p "$work" && cd "$work"
[ -f mfn.pt ] || faceembed import "$data/weights/mobilefacenet_casia_112x96.ckpt" --out mfn.pt
[ -f mfn.onnx ] || faceembed export mfn.pt --out mfn.onnx
faceembed tobin lfw --data "$data/lfw" --all-images --batch-size 32 --out lfw_all32 > /dev/null
cat lfw_all32/*.bin > /dev/null   # the same page-cache state for every engine
declare -A opts=([local]="--engine local" [ray1]="--engine ray --num-workers 1" [ray2]="--engine ray --num-workers 2")
for round in $(seq "$rounds"); do
  for engine in ${ENGINES:-local ray1 ray2}; do
    rm -rf out
    /usr/bin/time -f "$engine round $round: %e s" \
      faceembed infer --model mfn.onnx --input lfw_all32 --output out --no-progress ${opts[$engine]} > /dev/null
    cp out/infer_summary.json "out_${engine}_${round}.json"
  done
done

#!/usr/bin/env bash
# Reproduce the committed RMA checkpoint (maskclip_ros/assets/rma/) and the README's RMA results table on
# the generated world, on CPU. Usage: scripts/rma_results.sh [OUT_DIR]   (default: out/rma)
#
# Steps: write the training world (seed 11) and the held-out world (seed 12; the small CLIP trained on
# seeds 0 and 1, eval-clip uses seed 1000), train RMA three times (default layers, last layer only, no mask
# refinement; same steps each), then evaluate crop / tokens / rma and the two ablations with ground-truth
# masks and with `regions` proposals. Training steps and the number of held-out images are the
# environment variables STEPS and IMAGES; CLIP picks the CLIP (default: the committed small CLIP, whose
# RMA checkpoint is rma/maskclip-ros-tiny-vit16-rma.pt = OUT_DIR/rma_default/rma.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/rma}
STEPS=${STEPS:-200}
IMAGES=${IMAGES:-30}
CLIP=${CLIP:-clip/maskclip-ros-tiny-vit16.pt}
CLI=${CLI:-.venv/bin/maskclip-ros}

[ -f "$OUT/world/panoptic_train.json" ] || $CLI make-world "$OUT/world" --set make_world.num_images=400 --set make_world.seed=11 --set make_world.split=train
[ -f "$OUT/world/panoptic_val.json" ] || $CLI make-world "$OUT/world" --set make_world.num_images=40 --set make_world.seed=12 --set make_world.split=val

train() {  # name, extra --set arguments...
  local name=$1; shift
  $CLI train --data "$OUT/world" --split train --out "$OUT/$name" --no-progress --set clip.checkpoint="$CLIP" \
    --set train.steps="$STEPS" --set train.lr=1e-3 --set train.batch_size=2 "$@"
}
train rma_default &
train rma_last --set maskclip.rma_layers=6 &
train rma_norefine --set maskclip.rma_refine=false &
wait

eval_runs() {  # output name, proposal source
  $CLI eval --data "$OUT/world" --split val --out "$OUT/eval_$1" --no-progress --set clip.checkpoint="$CLIP" \
    --set eval.max_images="$IMAGES" --set eval.proposals="$2" --set maskclip.crop_size=128 \
    --variant "crop:maskclip.mode=crop" \
    --variant "tokens:maskclip.mode=tokens" \
    --variant "rma:maskclip.mode=rma,maskclip.rma_checkpoint=$PWD/$OUT/rma_default/rma.pt" \
    --variant "rma, last layer only:maskclip.mode=rma,maskclip.rma_checkpoint=$PWD/$OUT/rma_last/rma.pt" \
    --variant "rma, no refinement:maskclip.mode=rma,maskclip.rma_refine=false,maskclip.rma_checkpoint=$PWD/$OUT/rma_norefine/rma.pt"
}
eval_runs gt gt &
eval_runs regions backend &
wait
echo "results: $OUT/eval_gt/results.md $OUT/eval_regions/results.md"

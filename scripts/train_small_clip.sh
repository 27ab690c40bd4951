#!/usr/bin/env bash
# Reproduce the committed small CLIP (maskclip_ros/assets/clip/maskclip-ros-tiny-vit16.pt) on CPU: five
# train-clip runs, each warm-started from the one before (about 4 hours on 2 cores). Its .json records the
# five runs as they happened (init_run). Usage: scripts/train_small_clip.sh [OUT_DIR]   (default: out/clip)
#   1. base:    native-scale windows and whole scenes, from random init (config/small_clip.yaml, 55 min)
#   2. regions: whole-region stuff samples (region_prob 0.5), seed 1, 20 min
#   3. tokens:  the mask-token recipe (config/small_clip_tokens.yaml, 42 min, both cores)
#   4. tokens2: the same recipe again from run 3 (a fresh warmup and cosine, 60 min)
#   5. tokens3: the same recipe again from run 4 (65 min, at most 4500 steps) -> OUT_DIR/tokens3.pt
# The cosine schedule ends at each run's wall-clock budget, so a rerun gives the same recipe, not the same
# bytes. Each run resumes from its .state.pt when interrupted.
# Environment: DEVICE=cuda trains on a CUDA GPU (train_clip.device; not yet run on one); MINUTES_SCALE
# multiplies every run's wall-clock budget (e.g. 0.5: half the time each).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/clip}
CLI=${CLI:-.venv/bin/maskclip-ros}
DEVICE=${DEVICE:-cpu}
MINUTES_SCALE=${MINUTES_SCALE:-1}
mkdir -p "$OUT"
minutes() { python3 -c "import sys; print(round(float(sys.argv[1]) * float(sys.argv[2]), 3))" "$1" "$MINUTES_SCALE"; }
on_device=(--set train_clip.device="$DEVICE")

[ -f "$OUT/base.done" ] || { $CLI train-clip --out "$OUT/base.pt" --log "$OUT/base.jsonl" "${on_device[@]}" \
  --set train_clip.minutes="$(minutes 55)" && touch "$OUT/base.done"; }
[ -f "$OUT/regions.done" ] || { $CLI train-clip --out "$OUT/regions.pt" --log "$OUT/regions.jsonl" "${on_device[@]}" \
  --set train_clip.init="$OUT/base.pt" --set train_clip.seed=1 --set train_clip.region_prob=0.5 \
  --set train_clip.lr=2.5e-4 --set train_clip.warmup_steps=50 --set train_clip.minutes="$(minutes 20)" \
  && touch "$OUT/regions.done"; }
[ -f "$OUT/tokens.done" ] || { $CLI train-clip --config config/small_clip_tokens.yaml --out "$OUT/tokens.pt" \
  --log "$OUT/tokens.jsonl" "${on_device[@]}" --set train_clip.init="$OUT/regions.pt" \
  --set train_clip.minutes="$(minutes 42)" && touch "$OUT/tokens.done"; }
[ -f "$OUT/tokens2.done" ] || { $CLI train-clip --config config/small_clip_tokens.yaml --out "$OUT/tokens2.pt" \
  --log "$OUT/tokens2.jsonl" "${on_device[@]}" --set train_clip.init="$OUT/tokens.pt" \
  --set train_clip.minutes="$(minutes 60)" && touch "$OUT/tokens2.done"; }
$CLI train-clip --config config/small_clip_tokens.yaml --out "$OUT/tokens3.pt" --log "$OUT/tokens3.jsonl" \
  "${on_device[@]}" --set train_clip.init="$OUT/tokens2.pt" --set train_clip.minutes="$(minutes 65)" \
  --set train_clip.steps=4500
echo "small CLIP: $OUT/tokens3.pt (cp it to maskclip_ros/assets/clip/maskclip-ros-tiny-vit16.pt)"

#!/usr/bin/env bash
# The recipe of the bundled detector models/charlstm-yelp-detector, from the bundled generator models/charlstm-yelp:
# 3,000 of the generator's held-out Yelp reviews and 3,000 reviews it writes (temperatures 0.5-1.2, top-k 0/20,
# top-p 1.0/0.9, star prompts, length caps 300/600/1000), a fifth kept for testing; then a detector from the
# generator's first LSTM layer with a mean-pooling head, 2,400 steps (about 25 minutes on a 2-core CPU); then the
# evaluation table.
#
#   scripts/build_detector.sh [DATA_DIR] [DETECTOR_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-runs/detector-data}
DETECTOR_DIR=${2:-models/charlstm-yelp-detector}
charlstm detector build-data "$DATA_DIR" --generator models/charlstm-yelp \
    --count 3000 --batch-size 32 --test-fraction 0.2 --seed 0
charlstm detector train "$DATA_DIR" "$DETECTOR_DIR" --generator models/charlstm-yelp \
    --layers 1 --pooling mean --max-steps 2400 --max-chars 800 --learning-rate 1e-3 --seed 0
python scripts/eval_detector.py --data "$DATA_DIR" --detector "$DETECTOR_DIR" --generator models/charlstm-yelp \
    --json runs/eval_detector.json

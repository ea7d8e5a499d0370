#!/usr/bin/env bash
# The recipe of the bundled detector models/charlstm-yelp-detector, from the bundled generator models/charlstm-yelp:
# 5,000 of the generator's held-out Yelp reviews and 5,000 reviews it writes (temperatures 0.5-1.2, top-k 0/20,
# top-p 1.0/0.9, star prompts, length caps 300/600/1000; about 9 minutes), a fifth kept for testing; then a detector
# from both of the generator's LSTM layers with a mean-pooling head, 3,000 steps (about an hour on one core of a
# 2-core CPU); then the evaluation table.
#
#   scripts/build_detector.sh [DATA_DIR] [DETECTOR_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-runs/detector-data}
DETECTOR_DIR=${2:-models/charlstm-yelp-detector}
charlstm detector build-data "$DATA_DIR" --generator models/charlstm-yelp \
    --count 5000 --batch-size 32 --test-fraction 0.2 --seed 0
charlstm detector train "$DATA_DIR" "$DETECTOR_DIR" --generator models/charlstm-yelp \
    --layers 2 --pooling mean --max-steps 3000 --max-chars 800 --learning-rate 1e-3 --seed 0
python scripts/eval_detector.py --data "$DATA_DIR" --detector "$DETECTOR_DIR" --generator models/charlstm-yelp \
    --json runs/eval_detector.json

#!/usr/bin/env bash
# The recipe of the bundled detector charlstm/bundled/charlstm-yelp-detector, from the bundled generator charlstm/bundled/charlstm-yelp:
# 1. 5,000 of the generator's held-out Yelp reviews and 5,000 reviews it writes (temperatures 0.5-1.2, top-k 0/20,
#    top-p 1.0/0.9, star prompts, length caps 300/600/1000; about 9 minutes), a fifth kept for testing;
# 2. a detector from both of the generator's LSTM layers with a mean-pooling head, 3,000 steps (about 100 minutes
#    on one core of a 2-core CPU);
# 3. calibration data: 1,000 further held-out reviews (none of step 1's) and 1,000 new machine reviews (2 minutes);
# 4. the lexicon: the detector's head also weighs the share of a text's words missing from the generator's
#    training reviews, calibrated on step 3's training split (5 minutes, with the test figures);
# 5. the evaluation table on step 1's test split.
#
#   scripts/build_detector.sh [DATA_DIR] [DETECTOR_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-runs/detector-data}
DETECTOR_DIR=${2:-charlstm/bundled/charlstm-yelp-detector}
TRAINED_DIR=runs/detector-trained
CALIBRATION_DIR=runs/detector-calibration-data
charlstm detector build-data "$DATA_DIR" --generator charlstm/bundled/charlstm-yelp \
    --count 5000 --batch-size 32 --test-fraction 0.2 --seed 0
charlstm detector train "$DATA_DIR" "$TRAINED_DIR" --generator charlstm/bundled/charlstm-yelp \
    --layers 2 --pooling mean --max-steps 3000 --max-chars 800 --learning-rate 1e-3 --seed 0
charlstm detector build-data "$CALIBRATION_DIR" --generator charlstm/bundled/charlstm-yelp \
    --count 1000 --batch-size 32 --test-fraction 0.2 --seed 1 --exclude "$DATA_DIR"
charlstm detector calibrate "$TRAINED_DIR" "$CALIBRATION_DIR" "$DETECTOR_DIR" --generator charlstm/bundled/charlstm-yelp \
    --test-data "$DATA_DIR"
python scripts/eval_detector.py --data "$DATA_DIR" --detector "$DETECTOR_DIR" --generator charlstm/bundled/charlstm-yelp \
    --json runs/eval_detector.json

#!/usr/bin/env bash
# The recipe of the bundled model charlstm/bundled/charlstm-yelp: `charlstm train --recipe yelp`, defined once in
# charlstm/training/config.py (RECIPES) and shared with scripts/compare_recipes.py. A star-conditioned `small`
# char-LSTM ([512, 512]) trained on ../shared/data/yelp_reviews.jsonl with 20% of the reviews held out (seed 0), for 75
# minutes on two torch threads. The held-out reviews are the human side of the detector's data (never seen by the
# generator). On a GPU the same command runs in bf16; raise --max-minutes or pick --preset base/large there.
#
#   scripts/train_yelp.sh [OUTPUT_DIR] [extra charlstm train flags, e.g. --resume]
set -euo pipefail
cd "$(dirname "$0")/.."
OUTPUT_DIR=${1:-runs/yelp-small}
shift || true
exec charlstm train --recipe yelp --output-dir "$OUTPUT_DIR" "$@"

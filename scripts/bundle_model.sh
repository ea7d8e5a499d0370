#!/usr/bin/env bash
# Copies a finished `charlstm train` run into the bundled model directory: the Hub-style files only (weights,
# config, generation config, tokenizer, code files, training log and curves; no checkpoints or optimizer state),
# then renders its model card from model_card.md.
#
#   scripts/bundle_model.sh runs/yelp-small [charlstm/bundled/charlstm-yelp]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:?usage: scripts/bundle_model.sh RUN_DIR [DEST]}
DEST=${2:-charlstm/bundled/charlstm-yelp}
test -f "$RUN_DIR/training_log.json" || { echo "$RUN_DIR has no training_log.json: the run has not finished" >&2; exit 2; }
mkdir -p "$DEST"
cp "$RUN_DIR"/{config.json,generation_config.json,model.safetensors,tokenizer_config.json,vocab.json} "$DEST"/
cp "$RUN_DIR"/{configuration_charlstm.py,modeling_charlstm.py,tokenization_charlstm.py} "$DEST"/
cp "$RUN_DIR"/{training_log.json,training_curves.png} "$DEST"/
charlstm model-card "$DEST" --write
du -sh "$DEST"

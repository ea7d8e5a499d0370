#!/usr/bin/env bash
# The recipe of a frozen-generator detector (`charlstm detector train --frozen`, issue 29): the generator's LSTM as
# it is, and a logistic-regression head on its mean top-layer state averaged with one on the text's hashed n-grams
# (NGRAM_BUCKETS; 0 for the state alone) of 1 to NGRAM_CHARS characters and 1 to NGRAM_WORDS words, the combination
# scripts/ablate_detectors.py measured ahead of the character n-gram baseline alone with whole generator families and
# whole labelled sets held out (the word pairs lift ten of eleven families left out; the README has the figures, and
# those of words alone, NGRAM_CHARS=0); on texts that read
# like Yelp reviews (OWN_DOMAIN: the labelled sets' name for the generator's domain), a head on how likely the
# generator finds the text and how much likelier once told the best rating, fitted on its own samples against human
# Yelp reviews, overrules the two where it is surer the text is machine-written (the generator's hot samples, which
# the other heads take for human).
# 1. the data: the generator's held-out Yelp reviews and its own samples (temperatures 0.6-1.2, top-k 0/20, top-p
#    1.0/0.9, length caps 300/600/1000), and every row of the eight labelled sets in LABELLED_DIR (see its README)
#    except human ones the generator trained on, texts of 100+ characters;
# 2. the detector: at most PER_SIDE human and PER_SIDE machine texts per set (machine ones shared equally between its
#    generators, in the domain shares of its human texts), normalised as its tokenizer reads them, 70% of the
#    rewrite-linked groups to fit on and 30% to measure on; one pass of the generator per text, the head fitted on
#    crops of 100, 200 and 400 characters; threshold (at most 5% of each set's human texts called machine), uncertain
#    band and per-set and per-family figures (with a head fitted without each) go into its config.json;
# 3. its model card.
# It is the recipe of the bundled detector charlstm/bundled/charlstm-yelp-detector (the default OUT_DIR), on the
# bundled generator: about 16 minutes on a 2-core CPU, most of it writing the generator's samples and reading every
# text once through the generator. scripts/compare_detectors.py puts it beside another detector on its tested texts.
#
#   scripts/build_frozen_detector.sh [OUT_DIR] [LABELLED_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-charlstm/bundled/charlstm-yelp-detector}
LABELLED_DIR=${2:-../shared/data/detection}
GENERATOR=charlstm/bundled/charlstm-yelp
DATA_DIR=runs/detector-data-all
PER_SIDE=400
NGRAM_BUCKETS=${NGRAM_BUCKETS:-262139}
NGRAM_WORDS=${NGRAM_WORDS:-2}
NGRAM_CHARS=${NGRAM_CHARS:-4}
OWN_DOMAIN=${OWN_DOMAIN-yelp}  # empty: no own-sample head

labelled=()
for source in "$LABELLED_DIR"/*.jsonl; do
    labelled+=(--labelled "$source")
done
[ -d "$DATA_DIR" ] || charlstm detector build-data "$DATA_DIR" --generator "$GENERATOR" \
    --count "$PER_SIDE" --temperatures 0.6,0.8,1.0,1.2 --min-chars 100 --batch-size 32 --seed 0 "${labelled[@]}"
rm -rf "$OUT_DIR"
charlstm detector train "$DATA_DIR" "$OUT_DIR" --generator "$GENERATOR" --frozen --per-side "$PER_SIDE" --seed 0 \
    --ngram-buckets "$NGRAM_BUCKETS" --ngram-words "$NGRAM_WORDS" --ngram-chars "$NGRAM_CHARS" \
    ${OWN_DOMAIN:+--own-domain "$OWN_DOMAIN"}
charlstm model-card "$OUT_DIR" --write

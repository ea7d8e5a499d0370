"""The defaults of a training run, in a module that imports nothing heavy: `charlstm train --help` shows them."""

DEFAULT_DATASET = "Yelp/yelp_review_full"

# Model sizes. `base` is the two-layer [1024, 512] model of the IBM "generate fake reviews" code pattern.
PRESETS = {
    "tiny": {"embedding_dim": 16, "hidden_sizes": [64]},
    "small": {"embedding_dim": 64, "hidden_sizes": [512, 512]},
    "base": {"embedding_dim": 64, "hidden_sizes": [1024, 512]},
    "large": {"embedding_dim": 128, "hidden_sizes": [1536, 1536]},
}

# The data options `train` and `eval` share; `eval` takes any it is not given from the model's training log, and
# these where the log has none.
DATA_DEFAULTS = {
    "dataset": DEFAULT_DATASET,
    "text_column": "text",
    "validation_fraction": 0.05,
    "seed": 0,
    "seq_len": 256,
    "batch_size": 32,
}

# Size of the rating input a star-conditioned model reads at every step (`--star-embedding-dim`).
STAR_EMBEDDING_DIM = 16

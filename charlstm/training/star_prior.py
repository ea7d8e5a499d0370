"""The share of each star rating among a run's training reviews, saved in the model as `config.star_shares`.

A star-conditioned model asked for no rating draws one from it, so its reviews start as its training reviews did,
after a star token; `charlstm rate --prior training` weighs its ratings by it.
"""

import numpy as np
from datasets import Dataset


def star_shares(reviews: Dataset) -> list[float]:
    """The share of each rating 1-5 among `reviews` (a `stars` column of 1-5)."""
    counts = np.bincount(np.asarray(reviews["stars"], dtype=np.int64), minlength=6)[1:6]
    return [round(float(count) / max(int(counts.sum()), 1), 6) for count in counts]

"""Giving a saved generator that reads the rating only from its star token the rating input at every step.

Used by `charlstm train --init-from OLD --condition-on-stars`: the new first-layer input columns start at zero, so
the model computes exactly what it did before at step 0, and fine-tuning learns to use the rating from there
instead of from a random start.
"""

import torch
from torch import nn

from ..configuration_charlstm import NUM_RATINGS

# Small, so that the first updates of the zero columns stay small too; not zero, or those columns get no gradient.
STAR_EMBEDDING_INIT_STD = 0.1


def add_rating_input(model, star_embedding_dim: int, seed: int = 0) -> None:
    """
    Widens the first LSTM layer of a causal LM (in place) by `star_embedding_dim` input columns, all zero, and adds
    the rating embedding they read. Does nothing to a model that has a rating input already.
    """
    if model.config.star_embedding_dim or star_embedding_dim <= 0:
        return
    base = model.model
    old = base.layers[0]
    generator = torch.Generator().manual_seed(seed)
    new = nn.LSTM(old.input_size + star_embedding_dim, old.hidden_size, batch_first=True)
    with torch.no_grad():
        new.weight_ih_l0.zero_()
        new.weight_ih_l0[:, : old.input_size] = old.weight_ih_l0
        new.weight_hh_l0.copy_(old.weight_hh_l0)
        new.bias_ih_l0.copy_(old.bias_ih_l0)
        new.bias_hh_l0.copy_(old.bias_hh_l0)
        stars = nn.Embedding(NUM_RATINGS, star_embedding_dim)
        stars.weight.copy_(torch.randn(stars.weight.shape, generator=generator) * STAR_EMBEDDING_INIT_STD)
    device = old.weight_ih_l0.device
    base.layers[0] = new.to(device)
    base.star_embeddings = stars.to(device)
    model.config.star_embedding_dim = star_embedding_dim

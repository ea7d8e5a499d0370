"""The check on loaded weights that neither the config nor the file format makes: every number is finite."""

import itertools

import torch
from torch import nn

from .errors import UsageError


def check_finite_weights(model: nn.Module, source: str) -> None:
    """
    NaN or infinite weights (a run that diverged, a file edited by a broken tool) load without complaint and only
    show later: as `probability tensor contains inf, nan` while sampling, an int8 quantizer that cannot choose a
    scale, or a detector whose every probability is NaN. Refused here, naming the first such tensor.
    """
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UsageError(
                f"the weights of {source} hold NaN or infinite values ({name}): the model is broken; retrain it or "
                "load an earlier checkpoint"
            )

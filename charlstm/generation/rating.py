"""The rating a star-conditioned generator gives a text: P(stars | text) by Bayes' rule over the five ratings.

A model that writes reviews to order can also be run the other way, as Lipton et al. (2015) did with their
Generative Concatenative Network: score the text after each of `<1star>`..`<5star>` and weigh the five likelihoods
by a prior. No classifier is trained for it; how good it is is measured by `scripts/bench_stars.py`.
"""

import math

import torch

from ..errors import UsageError
from ..tokenization_charlstm import STAR_TOKENS

RATINGS = (1, 2, 3, 4, 5)


def rating_prior(model, prior: str = "uniform") -> list[float]:
    """
    P(stars) for stars 1-5: `"uniform"`, or `"training"`, the shares of the model's training reviews
    (`config.star_shares`, saved by `charlstm train`; uniform for a model saved without them).
    """
    if prior not in ("uniform", "training"):
        raise UsageError(f"prior must be 'uniform' or 'training', got {prior!r}")
    shares = getattr(model.config, "star_shares", None) if prior == "training" else None
    if not shares:
        return [1.0 / len(RATINGS)] * len(RATINGS)
    total = float(sum(shares))
    return [share / total for share in shares]


@torch.no_grad()
def rating_log_likelihoods(model, tokenizer, text: str, complete: bool = True) -> list[float]:
    """
    log P(text | stars) in nats for stars 1-5: the text's characters (and, if `complete`, the `<eos>` that ends a
    whole review) after `<bos><Nstar>`. Characters are mapped one by one, so a literal "<5star>" in the text stays
    seven characters; characters the model does not know count as `<unk>`.
    """
    if not getattr(model.config, "conditioned_on_stars", False):
        raise UsageError("this model was not trained with star ratings (conditioned_on_stars is false): it cannot rate")
    characters = tokenizer.convert_tokens_to_ids(list(text))
    if not characters and not complete:
        return [0.0] * len(RATINGS)
    targets = characters + ([tokenizer.eos_token_id] if complete else [])
    rows = [[tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(token), *targets[:-1]] for token in STAR_TOKENS]
    input_ids = torch.tensor(rows, dtype=torch.long, device=model.device)  # [5, length]; no padding needed
    logits = model(input_ids=input_ids, use_cache=False).logits[:, 1:]  # from the star token on: predicts targets
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    wanted = torch.tensor(targets, device=log_probs.device).expand(len(RATINGS), -1).unsqueeze(-1)
    return log_probs.gather(2, wanted).squeeze(-1).sum(dim=1).tolist()


def star_probabilities(model, tokenizer, text: str, prior: str = "uniform", complete: bool = True) -> list[float]:
    """P(stars | text) for stars 1-5 by Bayes' rule: likelihoods from `rating_log_likelihoods`, times the prior."""
    log_joint = [
        likelihood + math.log(max(p, 1e-12))
        for likelihood, p in zip(rating_log_likelihoods(model, tokenizer, text, complete), rating_prior(model, prior))
    ]
    top = max(log_joint)
    weights = [math.exp(value - top) for value in log_joint]
    return [weight / sum(weights) for weight in weights]

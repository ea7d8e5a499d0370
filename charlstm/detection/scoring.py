"""The generator's own view of a text: for every character, how likely it found it and where it ranked it.

One forward pass of the causal LM gives, at each position, the distribution over the next token. A text the model
wrote itself at a low temperature is mostly made of its top choices; a human text is not. The detector's zero-shot
baseline and the Space's colour-coded view both read these scores.
"""

from dataclasses import dataclass, field
from math import log, sqrt

import torch

from ..errors import UsageError
from ..tokenization_charlstm import star_token

# Rank buckets, in order: (name, highest rank in it). Anything beyond the last bound is "beyond".
RANK_BUCKETS = (("top1", 1), ("top3", 3), ("top10", 10))
BEYOND = "beyond"


@dataclass
class CharacterScores:
    """
    text: the text that was scored (cut to the tokenizer's `model_max_length` when it was longer; see `truncated`).
    characters: one entry per character of `text` (`"".join(characters) == text`).
    ranks: 1 = the model's top choice for that character given everything before it (the first character is
        predicted from `<bos>`, or from the star token when one was given). Ranks run over the whole vocabulary.
    log_probs: natural-log probability the model gave each character.
    expected_log_probs, log_prob_variances: the mean and variance of the log-probability of the character the model
        itself would sample there (minus its entropy, and the spread around it).
    unknown: True where the character is outside the vocabulary; it was scored as `<unk>`.
    """

    text: str
    characters: list[str]
    ranks: list[int]
    log_probs: list[float]
    expected_log_probs: list[float]
    log_prob_variances: list[float]
    unknown: list[bool]
    truncated: bool = False
    bits_per_character: float = field(init=False)
    top1_share: float = field(init=False)
    curvature: float = field(init=False)

    def __post_init__(self):
        count = len(self.characters)
        self.bits_per_character = -sum(self.log_probs) / (count * log(2))
        self.top1_share = sum(rank == 1 for rank in self.ranks) / count
        # Fast-DetectGPT's analytic criterion (Bao et al. 2024): how much likelier the text is than what the model
        # itself would write in the same places, in standard deviations. It asks "likely for its context?" rather
        # than "likely?", which a text's topic and wording alone move.
        spread = sqrt(max(sum(self.log_prob_variances), 1e-12))
        self.curvature = (sum(self.log_probs) - sum(self.expected_log_probs)) / spread

    def head(self, count: int) -> "CharacterScores":
        """
        The scores of the first `count` characters. The model reads left to right, so they are exactly what scoring
        `text[:count]` alone would give, without running the model again.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        return CharacterScores(
            self.text[:count], self.characters[:count], self.ranks[:count], self.log_probs[:count],
            self.expected_log_probs[:count], self.log_prob_variances[:count], self.unknown[:count],
            self.truncated and count >= len(self.characters),
        )

    def rank_buckets(self) -> list[str]:
        """"top1", "top3", "top10" or "beyond" for each character: how high the model ranked it."""
        return [rank_bucket(rank) for rank in self.ranks]

    def share_within(self, top: int) -> float:
        """Share of characters the model ranked among its `top` choices."""
        return sum(rank <= top for rank in self.ranks) / len(self.ranks)


def rank_bucket(rank: int) -> str:
    for name, bound in RANK_BUCKETS:
        if rank <= bound:
            return name
    return BEYOND


def encode_for_scoring(tokenizer, text: str, stars: int | None = None) -> tuple[list[int], str, bool]:
    """
    `<bos>` (then the star token, if any) followed by one id per character, cut to `model_max_length` ids.
    Characters are mapped one by one, so a literal "<5star>" inside a review is scored as seven characters.
    Returns the ids, the text those ids cover and whether it was cut.
    """
    if not isinstance(text, str):
        raise UsageError(f"text must be a string, got {type(text).__name__}")
    if not text:
        raise UsageError("text is empty: there is nothing to score")
    prefix = [tokenizer.bos_token_id]
    if stars is not None:
        prefix.append(tokenizer.convert_tokens_to_ids(star_token(stars)))
    room = tokenizer.model_max_length - len(prefix)
    kept = text[:room]
    return prefix + tokenizer.convert_tokens_to_ids(list(kept)), kept, len(kept) < len(text)


@torch.no_grad()
def score_texts(
    model, tokenizer, texts: list[str], batch_size: int = 32, stars: int | None = None
) -> list[CharacterScores]:
    """
    Scores many texts, `batch_size` at a time. Padding never touches the LSTM state, so a batched score equals the
    one-by-one score. Texts are batched in order of length to waste little on padding; results keep input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    if model.training:
        # Dropout would make the scores random; changing the caller's model behind its back would be worse.
        raise ValueError("the model is in training mode: call model.eval() before scoring")
    encoded = [encode_for_scoring(tokenizer, text, stars) for text in texts]
    results: list[CharacterScores | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda index: len(encoded[index][0]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        scored = _score_batch(model, tokenizer, [encoded[index][0] for index in chunk])
        for index, columns in zip(chunk, scored):
            ids, kept, truncated = encoded[index]
            count = len(kept)  # the prompt (<bos>, star token) is not part of the text
            unknown = [token_id == tokenizer.unk_token_id for token_id in ids[-count:]]
            per_character = [column[-count:] for column in columns]
            results[index] = CharacterScores(kept, list(kept), *per_character, unknown, truncated)
    return results


def score_text(model, tokenizer, text: str, stars: int | None = None) -> CharacterScores:
    """Scores one text. Empty text is a UsageError; text longer than `model_max_length` is cut (see `truncated`)."""
    return score_texts(model, tokenizer, [text], batch_size=1, stars=stars)[0]


def _score_batch(model, tokenizer, rows: list[list[int]]) -> list[tuple[list, list, list, list]]:
    """
    Runs the left-padded rows through the model once; returns, for every real token after the first, the rank and
    log-probability the model gave it, and the mean and variance of the log-probability of its own sample there.
    """
    batch = tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt").to(model.device)
    logits = model(**batch, use_cache=False).logits.float()
    # The logits at position p predict the token at p + 1.
    predicting, targets = logits[:, :-1], batch["input_ids"][:, 1:].unsqueeze(-1)
    ranks = (predicting > predicting.gather(-1, targets)).sum(dim=-1) + 1
    all_log_probs = torch.log_softmax(predicting, dim=-1)
    log_probs = all_log_probs.gather(-1, targets).squeeze(-1)
    probs = all_log_probs.exp()
    expected = (probs * all_log_probs).sum(dim=-1)
    variances = (probs * all_log_probs.square()).sum(dim=-1) - expected.square()
    columns = (ranks, log_probs, expected, variances)
    return [tuple(column[i, 1 - len(row) :].tolist() for column in columns) for i, row in enumerate(rows)]

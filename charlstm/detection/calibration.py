"""Giving a trained detector a lexicon: the words of the generator's training reviews.

A character model sampled at temperature 1.0 writes text with the per-character statistics of its training data,
which the detector's LSTM finds hard to tell from human text; but it also invents words ("aname"), and real
reviews seldom use a word that thousands of other reviews never did. So the detector's head also reads the share
of a text's words missing from that lexicon (see `CharLSTMForSequenceClassification`).

The LSTM stays as trained. Calibration fits three numbers by logistic regression on labelled texts the detector
never trained on: a scale for the trained head's margin, and a weight and a bias for the lexicon term. It is
cheap (one forward pass over the texts), so an existing detector gains the lexicon without training again.
"""

import copy

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .. import register
from ..errors import UsageError
from ..modeling_charlstm import letter_code, word_hashes
from .data import HUMAN, MACHINE
from .training import TOKENIZER_KWARGS

# The detector loads through the Auto classes, and the calibrated copy gets the code files and `auto_map`.
register()


def build_lexicon(texts) -> torch.Tensor:
    """The sorted hashes of every word in `texts`, as the model's `lexicon` buffer holds them."""
    words: set[int] = set()
    for text in texts:
        words.update(word_hashes([letter_code(character) for character in text]))
    return torch.tensor(sorted(words), dtype=torch.long)


def token_letter_codes(tokenizer) -> torch.Tensor:
    """For each token id, the `letter_code` of its character (0 for special tokens and non-letters)."""
    codes = torch.zeros(len(tokenizer), dtype=torch.long)
    for token, index in tokenizer.get_vocab().items():
        if len(token) == 1:
            codes[index] = letter_code(token)
    return codes


def calibrate_detector(detector_dir: str, lexicon_texts, data: Dataset, output_dir: str, batch_size: int = 32) -> dict:
    """
    Saves to `output_dir` the detector of `detector_dir` with a lexicon of `lexicon_texts` and its head calibrated
    on `data` (labelled texts it did not train on). Returns what to record in the detector's log.
    """
    labels = torch.tensor([int(label == MACHINE) for label in data["label"]], dtype=torch.float64)
    if len(set(labels.tolist())) < 2:
        raise UsageError(f"calibration needs both human and machine texts; the data has {len(labels)} of one kind")
    tokenizer = AutoTokenizer.from_pretrained(detector_dir)
    lexicon = build_lexicon(lexicon_texts)
    if len(lexicon) == 0:
        raise UsageError("the lexicon texts hold no words")
    # The trained detector as it is (any earlier lexicon left out), and the same weights with the new lexicon.
    trained = AutoModelForSequenceClassification.from_pretrained(detector_dir, lexicon_size=0, dtype=torch.float32)
    config = copy.deepcopy(trained.config)
    config.lexicon_size = len(lexicon)
    model = type(trained)(config)
    missing = model.load_state_dict(trained.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["letter_codes", "lexicon", "lexicon_score.bias", "lexicon_score.weight"], missing
    model.letter_codes.copy_(token_letter_codes(tokenizer))
    model.lexicon.copy_(lexicon)

    margins, features = _head_inputs(trained, model, tokenizer, list(data["text"]), batch_size)
    scale, weight, bias = _fit_logistic(torch.stack([margins, features], dim=1), labels).tolist()
    with torch.no_grad():
        model.score.weight.copy_(trained.score.weight * scale)
        model.score.bias.copy_(trained.score.bias * scale)
        # Only the machine logit moves: with two classes, the difference of the logits is what counts.
        model.lexicon_score.weight.zero_()[MACHINE, 0] = weight
        model.lexicon_score.bias.zero_()[MACHINE] = bias
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shares = features.pow(2)
    return {
        "words": len(lexicon),
        "calibration_texts": len(labels),
        "margin_scale": scale,
        "unknown_share_weight": weight,
        "bias": bias,
        "median_unknown_share": {
            name: shares[labels == label].median().item() for name, label in (("human", HUMAN), ("machine", MACHINE))
        },
    }


@torch.no_grad()
def _head_inputs(trained, model, tokenizer, texts: list[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: the trained head's margin (machine logit minus human logit) and the lexicon term's input."""
    trained.eval()
    margins, features = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt", **TOKENIZER_KWARGS)
        logits = trained(**batch).logits.double()
        margins.append(logits[:, MACHINE] - logits[:, HUMAN])
        features.append(model.unknown_word_share(batch["input_ids"]).double().sqrt())
    return torch.cat(margins), torch.cat(features)


def _fit_logistic(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Weights per input column, then the bias, of a logistic regression (lightly L2-regularised, for stability)."""
    weights = torch.zeros(inputs.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    optimizer = torch.optim.LBFGS([weights], max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(design @ weights, labels)
        value = value + 1e-4 * weights[:-1].pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return weights.detach()

"""Calibrating a trained detector: its P(machine) made to match how often texts were machine-written, optionally
with a lexicon, the words of the generator's training reviews.

The LSTM stays as trained; the head's margin (machine logit minus human logit) is scaled and shifted by a logistic
regression on labelled texts (Platt scaling). It is cheap, one forward pass over the texts, and it changes no
ranking: the same texts are flagged at the matching threshold, and every ROC-AUC stays.

The lexicon: a character model sampled at temperature 1.0 writes text with the per-character statistics of its
training data, which the detector's LSTM finds hard to tell from human text; but it also invents words ("aname"),
and real reviews seldom use a word that thousands of other reviews never did. With a lexicon the head also reads
the share of a text's words missing from it (see `CharLSTMForSequenceClassification`), with a weight fitted in the
same regression.
"""

import copy
import math

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .. import register
from ..errors import UsageError
from ..modeling_charlstm import letter_code, word_hashes
from .data import HUMAN, MACHINE
from .metrics import expected_calibration_error
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


def calibrate_detector(detector_dir: str, data: Dataset, output_dir: str, lexicon_texts=None,
                       batch_size: int = 32) -> dict:
    """
    Saves to `output_dir` the detector of `detector_dir` with its head calibrated on `data` (labelled texts it did
    not train on) and, given `lexicon_texts`, a lexicon of their words. Returns what to record in the detector's log,
    with the calibration error before and after measured out-of-fold (each half of `data` calibrated on the other).
    """
    labels = torch.tensor([int(label == MACHINE) for label in data["label"]], dtype=torch.float64)
    if len(set(labels.tolist())) < 2:
        raise UsageError(f"calibration needs both human and machine texts; the data has {len(labels)} of one kind")
    tokenizer = AutoTokenizer.from_pretrained(detector_dir)
    if lexicon_texts is None:
        trained = AutoModelForSequenceClassification.from_pretrained(detector_dir, dtype=torch.float32)
        model, lexicon = trained, None
    else:
        lexicon = build_lexicon(lexicon_texts)
        if len(lexicon) == 0:
            raise UsageError("the lexicon texts hold no words")
        trained, model = _with_lexicon(detector_dir, tokenizer, lexicon)

    inputs = _head_inputs(trained, model if lexicon is not None else None, tokenizer, list(data["text"]), batch_size)
    weights = _fit_logistic(inputs, labels).tolist()
    scale, bias = weights[0], weights[-1]
    errors = _out_of_fold_errors(inputs, labels)
    with torch.no_grad():
        model.score.weight.copy_(trained.score.weight * scale)
        model.score.bias.copy_(trained.score.bias * scale)
        # Only the machine logit moves: with two classes, the difference of the logits is what counts.
        model.score.bias[MACHINE] += bias
        if lexicon is not None:
            model.lexicon_score.weight.zero_()[MACHINE, 0] = weights[1]
            model.lexicon_score.bias.zero_()
        elif model.config.lexicon_size:  # an earlier lexicon's term is part of the margin that was scaled
            model.lexicon_score.weight.mul_(scale)
            model.lexicon_score.bias.mul_(scale)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = {"calibration_texts": len(labels), "machine_share": labels.mean().item(), "margin_scale": scale,
              "bias": bias, **errors}
    if lexicon is not None:
        shares = inputs[:, 1].pow(2)
        record.update(words=len(lexicon), unknown_share_weight=weights[1], median_unknown_share={
            name: shares[labels == label].median().item() for name, label in (("human", HUMAN), ("machine", MACHINE))
        })
    return record


def calibrated_probability(probability: float, margin_scale: float, bias: float) -> float:
    """A probability of the detector before calibration, as the calibrated detector gives it for the same text."""
    probability = min(max(probability, 1e-12), 1.0 - 1e-12)
    margin = math.log(probability / (1.0 - probability))
    return 1.0 / (1.0 + math.exp(-(margin_scale * margin + bias)))


def _with_lexicon(detector_dir: str, tokenizer, lexicon: torch.Tensor):
    """The trained detector as it is (any earlier lexicon left out), and the same weights with `lexicon`."""
    trained = AutoModelForSequenceClassification.from_pretrained(detector_dir, lexicon_size=0, dtype=torch.float32)
    config = copy.deepcopy(trained.config)
    config.lexicon_size = len(lexicon)
    model = type(trained)(config)
    missing = model.load_state_dict(trained.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["letter_codes", "lexicon", "lexicon_score.bias", "lexicon_score.weight"], missing
    model.letter_codes.copy_(token_letter_codes(tokenizer))
    model.lexicon.copy_(lexicon)
    return trained, model


@torch.no_grad()
def _head_inputs(trained, with_lexicon, tokenizer, texts: list[str], batch_size: int) -> torch.Tensor:
    """Per text: the trained head's margin (machine logit minus human logit) and, given a model `with_lexicon`, the
    lexicon term's input."""
    trained.eval()
    columns = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt", **TOKENIZER_KWARGS)
        logits = trained(**batch).logits.double()
        column = [logits[:, MACHINE] - logits[:, HUMAN]]
        if with_lexicon is not None:
            column.append(with_lexicon.unknown_word_share(batch["input_ids"]).double().sqrt())
        columns.append(torch.stack(column, dim=1))
    return torch.cat(columns)


def _out_of_fold_errors(inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Expected calibration error of the probabilities before calibration, and after it when each half of the texts
    is calibrated on the other half (seeded): what calibrating on these texts is worth on texts like them."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    calibrated = torch.empty_like(labels)
    for fitted, scored in (halves, halves[::-1]):
        if len(set(labels[fitted].tolist())) < 2:
            return {}  # too few texts of one kind to fit on half of them
        weights = _fit_logistic(inputs[fitted], labels[fitted])
        calibrated[scored] = torch.sigmoid(inputs[scored] @ weights[:-1] + weights[-1])
    before = torch.sigmoid(inputs[:, 0])
    return {name: expected_calibration_error(labels.tolist(), probabilities.tolist())
            for name, probabilities in (("calibration_error_before", before), ("calibration_error_after", calibrated))}


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

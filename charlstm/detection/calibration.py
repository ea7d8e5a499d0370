"""Calibrating a trained detector: its P(machine) made to match how often texts were machine-written.

The LSTM stays as trained; the head's margin (machine logit minus human logit) is scaled and shifted by a logistic
regression on labelled texts (Platt scaling), folded into the weights of every part of the head. It is cheap, one
forward pass over the texts, and it changes no ranking: the same texts are flagged at the matching threshold, and
every ROC-AUC stays, so the decision the detector carries (threshold, uncertain band) is carried through the same map.
"""

import math

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .. import register
from ..errors import UsageError
from .decision import DetectorDecision, record_decision
from .metrics import expected_calibration_error
from .settings import HUMAN, MACHINE, TOKENIZER_KWARGS

# The detector loads through the Auto classes, and the calibrated copy gets the code files and `auto_map`.
register()


def calibrate_detector(detector_dir: str, data: Dataset, output_dir: str, batch_size: int = 32,
                       about: dict | None = None) -> DetectorDecision:
    """
    Saves to `output_dir` the detector of `detector_dir` with its head calibrated on `data` (labelled texts it did
    not train on), and its decision carried through the same map: the same texts are flagged. The decision records
    the calibration (with `about`, e.g. which data it was), with the calibration error before and after measured
    out-of-fold (each half of `data` calibrated on the other).
    """
    labels = torch.tensor([int(label == MACHINE) for label in data["label"]], dtype=torch.float64)
    if len(set(labels.tolist())) < 2:
        raise UsageError(f"calibration needs both human and machine texts; the data has {len(labels)} of one kind")
    tokenizer = AutoTokenizer.from_pretrained(detector_dir)
    model = AutoModelForSequenceClassification.from_pretrained(detector_dir, dtype=torch.float32)
    before = DetectorDecision.of(model.config, detector_dir)
    margins = _margins(model, tokenizer, list(data["text"]), batch_size)
    calibration = {**(about or {}), **fold_platt_scaling(model, margins, labels)}
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    def mapped(probability: float) -> float:
        return calibrated_probability(probability, calibration["margin_scale"], calibration["bias"])

    changes = {"calibration": calibration}
    if before.threshold != DetectorDecision.threshold:
        changes["threshold"] = mapped(before.threshold)
    if before.uncertain_band:
        changes["uncertain_band"] = tuple(mapped(value) for value in before.uncertain_band)
    return record_decision(output_dir, **changes)


def fold_platt_scaling(model, margins: torch.Tensor, labels: torch.Tensor) -> dict:
    """
    Fits P(machine) = sigmoid(scale * margin + bias) to the detector's `margins` [texts, 1] on texts with `labels`
    (1 = machine) and folds it into `model`'s head; returns what it fitted, with the calibration error before and after
    measured out-of-fold. A detector that ranks the texts backwards is refused.
    """
    scale, bias = fit_logistic(margins, labels).tolist()
    if scale <= 0:
        raise UsageError(f"the detector ranks these texts no better than chance (its margin's weight is {scale:.3g}): "
                         "calibrating it on them would turn its verdicts around")
    errors = _out_of_fold_errors(margins, labels)
    _scale_margin(model, scale, bias)
    return {"calibration_texts": len(labels), "machine_share": labels.mean().item(), "margin_scale": scale,
            "bias": bias, **errors}


@torch.no_grad()
def _scale_margin(model, scale: float, bias: float) -> None:
    """Every part of the head that gives logits scaled by `scale` and the machine logit moved by `bias`: the margin
    becomes scale * margin + bias. The own-sample head's too, so which part decides a text stays the same."""
    parts = [model.score]
    parts += [model.ngrams] if model.ngrams is not None else []
    parts += [model.likelihood] if model.likelihood is not None else []
    for part in parts:
        for parameter in part.parameters(recurse=False):
            parameter.mul_(scale)
    # Only the machine logit moves: with two classes, the difference of the logits is what counts.
    model.score.bias[MACHINE] += bias
    if model.own_samples is not None:
        model.own_samples.likelihood.weight.mul_(scale)
        model.own_samples.bias.mul_(scale)
        model.own_samples.bias[MACHINE] += bias


def calibrated_probability(probability: float, margin_scale: float, bias: float) -> float:
    """A probability of the detector before calibration, as the calibrated detector gives it for the same text."""
    probability = min(max(probability, 1e-12), 1.0 - 1e-12)
    margin = math.log(probability / (1.0 - probability))
    return 1.0 / (1.0 + math.exp(-(margin_scale * margin + bias)))


@torch.no_grad()
def _margins(model, tokenizer, texts: list[str], batch_size: int) -> torch.Tensor:
    """Per text, the head's margin (machine logit minus human logit): [texts, 1]."""
    model.eval()
    margins = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt", **TOKENIZER_KWARGS)
        logits = model(**batch).logits.double()
        margins.append(logits[:, MACHINE] - logits[:, HUMAN])
    return torch.cat(margins).unsqueeze(1)


def _out_of_fold_errors(inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Expected calibration error of the probabilities before calibration, and after it when each half of the texts
    is calibrated on the other half (seeded): what calibrating on these texts is worth on texts like them."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    calibrated = torch.empty_like(labels)
    for fitted, scored in (halves, halves[::-1]):
        if len(set(labels[fitted].tolist())) < 2:
            return {}  # too few texts of one kind to fit on half of them
        weights = fit_logistic(inputs[fitted], labels[fitted])
        calibrated[scored] = torch.sigmoid(inputs[scored] @ weights[:-1] + weights[-1])
    before = torch.sigmoid(inputs[:, 0])
    return {name: expected_calibration_error(labels.tolist(), probabilities.tolist())
            for name, probabilities in (("calibration_error_before", before), ("calibration_error_after", calibrated))}


def fit_logistic(inputs: torch.Tensor, labels: torch.Tensor, l2: float = 1e-4) -> torch.Tensor:
    """Weights per input column, then the bias, of a logistic regression (L2-regularised by `l2`: lightly by default,
    for stability)."""
    weights = torch.zeros(inputs.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    optimizer = torch.optim.LBFGS([weights], max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(design @ weights, labels)
        value = value + l2 * weights[:-1].pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return weights.detach()

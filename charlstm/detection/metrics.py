"""How well a score separates machine-written (label 1) from human (label 0) texts.

A few lines of our own instead of scikit-learn: the project needs only ROC-AUC and the counts at one threshold,
and a dependency of that size for them would weigh on every install of the Space.
"""

import math
import random
from collections.abc import Sequence


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """
    The chance that a random machine text scores higher than a random human one (ties count half): the
    Mann-Whitney statistic, computed from the ranks of the scores with ties given their average rank.
    """
    positives = sum(1 for label in labels if label == 1)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC-AUC needs both human and machine texts")
    order = sorted(range(len(scores)), key=lambda index: scores[index])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    positive_rank_sum = sum(rank for rank, label in zip(ranks, labels) if label == 1)
    return (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def auc_interval(
    labels: Sequence[int], scores: Sequence[float], level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """
    A percentile bootstrap interval for the ROC-AUC. Human and machine texts are resampled separately, each class
    keeping its count, so every resample has the make-up of the test set. With a few dozen texts of one class (a
    single temperature, say), the interval shows how far the AUC itself could move.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    human = [score for score, label in zip(scores, labels) if label != 1]
    machine = [score for score, label in zip(scores, labels) if label == 1]
    resampled_labels = [0] * len(human) + [1] * len(machine)
    rng = random.Random(seed)
    values = sorted(
        roc_auc(resampled_labels, rng.choices(human, k=len(human)) + rng.choices(machine, k=len(machine)))
        for _ in range(resamples)
    )
    tail = (1.0 - level) / 2
    return values[int(tail * resamples)], values[min(resamples - 1, int((1.0 - tail) * resamples))]


def expected_calibration_error(labels: Sequence[int], probabilities: Sequence[float], bins: int = 10) -> float:
    """
    How far P(machine) is from how often texts were machine-written: the texts are put in `bins` equal-width bins
    of their probability, and each bin's gap between its mean probability and its share of machine texts is
    weighed by its share of the texts. 0 is perfect.
    """
    if not labels or len(labels) != len(probabilities):
        raise ValueError("expected as many probabilities as labels, and at least one")
    sums: dict[int, list[float]] = {}
    for label, probability in zip(labels, probabilities):
        totals = sums.setdefault(min(int(probability * bins), bins - 1), [0.0, 0.0, 0])
        totals[0] += probability
        totals[1] += label
        totals[2] += 1
    return sum(abs(probability - machine) for probability, machine, _ in sums.values()) / len(labels)


def threshold_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, float]:
    """
    Accuracy, precision and recall for the machine class, and the share of human texts called machine (what a real
    reviewer risks), when `score >= threshold` means machine.
    """
    predicted = [score >= threshold for score in scores]
    true_positive = sum(1 for guess, label in zip(predicted, labels) if guess and label == 1)
    false_positive = sum(1 for guess, label in zip(predicted, labels) if guess and label != 1)
    correct = sum(1 for guess, label in zip(predicted, labels) if guess == (label == 1))
    positives = sum(1 for label in labels if label == 1)
    return {
        "accuracy": correct / len(labels),
        "precision": true_positive / (true_positive + false_positive) if true_positive + false_positive else 0.0,
        "recall": true_positive / positives if positives else 0.0,
        "false_positive_rate": false_positive / (len(labels) - positives) if len(labels) > positives else 0.0,
    }


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """
    The threshold with the highest accuracy on these texts, midway between neighbouring scores. One sweep over the
    sorted scores: each step moves the texts of one score value from the machine side to the human side.
    """
    pairs = sorted(zip(scores, labels))
    correct = sum(1 for label in labels if label == 1)  # threshold below every score: all called machine
    best, best_correct = pairs[0][0] - 1.0, correct
    index = 0
    while index < len(pairs):
        value = pairs[index][0]
        while index < len(pairs) and pairs[index][0] == value:
            correct += 1 if pairs[index][1] != 1 else -1
            index += 1
        if correct > best_correct:
            best_correct = correct
            best = (value + pairs[index][0]) / 2 if index < len(pairs) else value + 1.0
    return best


def threshold_for_false_positive_rate(human_scores: dict[str, Sequence[float]], rate: float) -> float:
    """
    The lowest threshold (on a 0.001 grid, never below 0.5) at which no group's human texts are called machine
    more often than `rate`: each source's real reviews, not only their pool, are what a user must not be wrong
    about. 1.0 when some group's highest scores leave no such threshold below it.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate!r}")
    threshold = 0.5
    for name, scores in human_scores.items():
        if not scores:
            raise ValueError(f"group {name!r} has no human texts")
        # At most `allowed` texts may score at or above the threshold: it must lie above the next one down.
        allowed = int(rate * len(scores))
        ranked = sorted(scores, reverse=True)
        if allowed < len(ranked):
            threshold = max(threshold, _grid_value_above(ranked[allowed]))
    return min(threshold, 1.0)


def _grid_value_above(score: float) -> float:
    value = math.floor(score * 1000) / 1000
    while value <= score:  # floating point: 0.735 * 1000 may floor to 734
        value = round(value + 0.001, 3)
    return value

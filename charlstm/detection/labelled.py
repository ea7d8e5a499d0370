"""Labelled human / machine reviews from other people's generators: files or Hub datasets with a text and a label.

A detector that sees only its own generator's samples learns that generator's quirks and nothing about the large
language models that write today's fake reviews, so `charlstm detector build-data --labelled` adds such sets. Every
row keeps where it came from (`generator`, `domain`, `source`) so that evaluation can report per source and hold a
whole source out. Labels are mapped explicitly: a label nobody mapped is an error, never a guess.
"""

import os
from dataclasses import dataclass

from datasets import Dataset, concatenate_datasets

from ..errors import UsageError
from ..training.data import load_dataset_splits
from .settings import HUMAN, MACHINE

# Labels understood without a --label-map: the names build-data itself writes, and 0/1 as in its ClassLabel.
DEFAULT_LABEL_MAP = {"human": HUMAN, "machine": MACHINE, "0": HUMAN, "1": MACHINE}
CLASS_NAMES = {"human": HUMAN, "machine": MACHINE}
PROVENANCE = ("generator", "domain")


@dataclass
class LabelledRows:
    """rows: usable rows, as build-data's FEATURES expect them. left_out_unusable: rows whose text is missing, not a
    string or shorter than asked. left_out_trained_on: human rows dropped because the generator trained on them."""

    rows: list[dict]
    left_out_unusable: int
    left_out_trained_on: int = 0

    def without(self, trained_on: frozenset[str]) -> "LabelledRows":
        """
        These rows less the human rows whose text is in `trained_on` (the generator's training reviews): a generator
        finds text it trained on unusually likely, which would teach a detector built on it that such human text
        looks machine-made.
        """
        kept = [row for row in self.rows if row["label"] == MACHINE or row["text"] not in trained_on]
        return LabelledRows(kept, self.left_out_unusable, self.left_out_trained_on + len(self.rows) - len(kept))


def parse_label_map(text: str | None) -> dict[str, int]:
    """`"CG=machine,OR=human"` -> {"CG": 1, "OR": 0}; None -> the default map."""
    if text is None:
        return dict(DEFAULT_LABEL_MAP)
    mapping = {}
    for part in text.split(","):
        label, sep, name = part.partition("=")
        if not sep or not label.strip() or name.strip() not in CLASS_NAMES:
            raise UsageError(f"--label-map takes LABEL=human or LABEL=machine pairs separated by commas, got {part!r}")
        mapping[label.strip()] = CLASS_NAMES[name.strip()]
    return mapping


def load_labelled(
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    label_map: dict[str, int] | None = None,
    min_chars: int = 1,
) -> LabelledRows:
    """Every split of `source` as labelled rows. Refuses a missing column, unknown labels and a single class."""
    label_map = DEFAULT_LABEL_MAP if label_map is None else label_map
    splits = load_dataset_splits(source)
    table = concatenate_datasets(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
    for column, option in ((text_column, "--labelled-text-column"), (label_column, "--labelled-label-column")):
        if column not in table.column_names:
            raise UsageError(
                f"labelled data {source!r} has no column {column!r} ({option}); "
                f"its columns: {', '.join(table.column_names)}"
            )
    labels = [str(label) for label in table[label_column]]
    unknown = sorted(set(labels) - set(label_map))
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UsageError(
            f"labelled data {source!r} has labels no --label-map covers: {shown} (mapped: {', '.join(label_map)})"
        )
    classes = {label_map[label] for label in labels}
    if len(classes) < 2:
        only = "human" if classes == {HUMAN} else "machine"
        raise UsageError(f"labelled data {source!r} has only {only} rows: a detector needs both kinds")
    return _rows(table, source, text_column, [label_map[label] for label in labels], min_chars)


def _rows(table: Dataset, source: str, text_column: str, labels: list[int], min_chars: int) -> LabelledRows:
    name = os.path.basename(source.rstrip("/")) or source
    provenance = {column: table[column] if column in table.column_names else None for column in PROVENANCE}
    rows, unusable = [], 0
    for index, (text, label) in enumerate(zip(table[text_column], labels)):
        if not isinstance(text, str) or len(text.strip()) < min_chars:
            unusable += 1
            continue
        generator = provenance["generator"][index] if provenance["generator"] else None
        rows.append({
            "text": text,
            "label": label,
            "source": name,
            "generator": generator or ("human" if label == HUMAN else "unknown"),
            "domain": (provenance["domain"][index] if provenance["domain"] else None) or "unknown",
            "length": len(text),
        })
    return LabelledRows(rows, unusable)

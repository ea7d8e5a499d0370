"""Review data for training and evaluation: load, check, split, frame with special tokens, pack into blocks.

One place serves `charlstm train`, `charlstm eval` and the benchmarks, so every number is measured on the same
held-out part with the same framing.
"""

import codecs
import math
import os
import sys
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow
import torch
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets

from ..errors import UsageError
from ..tokenization_charlstm import CharLSTMTokenizer, star_token
from .config import ALL_REVIEWS

# File endings `datasets.load_dataset` reads with one of its packaged builders.
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}

# Columns tried, in order, when no --label-column is given: the Hub Yelp set says `label`, our jsonl `stars`.
LABEL_COLUMN_GUESSES = ("stars", "label")

# Names of a held-out split in a dataset that ships one, in order of preference.
HELD_OUT_SPLITS = ("validation", "test")

# What `datasets` and pyarrow end in when a local file or saved directory is malformed (a corrupt parquet is an
# ArrowInvalid, a dataset_dict.json without its splits a KeyError, a file of blank lines a ValueError).
UNREADABLE = (datasets.exceptions.DatasetGenerationError, pyarrow.ArrowException, ValueError, KeyError, TypeError)
# How `datasets` says that a file held no rows at all (a jsonl of blank lines, a csv with only its header).
NO_ROWS = "corresponds to no data"

IGNORE_INDEX = -100  # positions the loss skips (same value as the library's loss functions)


@dataclass
class Reviews:
    """The train and held-out reviews, each with a plain `text` column and, when known, `stars` (1-5)."""

    train: Dataset
    held_out: Dataset
    source: str
    text_column: str
    label_column: str | None

    @property
    def has_stars(self) -> bool:
        return "stars" in self.train.column_names


def load_reviews(
    source: str,
    text_column: str = "text",
    label_column: str | None = None,
    need_stars: bool = False,
    held_out_split: str | None = None,
    validation_fraction: float = 0.05,
    seed: int = 0,
) -> Reviews:
    """
    Loads a Hub dataset id or a local file/directory and returns train and held-out reviews.

    The held-out part is `held_out_split` when given, else the dataset's own validation or test split, else a
    `validation_fraction` of the train split chosen by `seed` (the same seed always holds out the same reviews).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise UsageError(f"--validation-fraction must be between 0 and 1, got {validation_fraction}")
    splits = load_dataset_splits(source)
    if "train" not in splits:
        raise UsageError(f"dataset {source!r} has no 'train' split (splits: {', '.join(splits)})")
    _check_column(splits, text_column, "--text-column", source)
    label_column = _resolve_label_column(splits, label_column, need_stars, source)

    splits = DatasetDict({name: _standardise(split, text_column, label_column) for name, split in splits.items()})
    _refuse_non_text(splits, text_column, source)
    if label_column is not None:
        splits = _map_stars(splits, label_column, source)
    kept = DatasetDict({name: split.filter(_has_text, desc="dropping blank reviews") for name, split in splits.items()})
    blank = sum(len(splits[name]) - len(kept[name]) for name in splits)
    if blank:
        print(f"{source}: left out {blank} blank review{'s' * (blank > 1)} (empty or only spaces)", file=sys.stderr)
    splits = kept
    if len(splits["train"]) == 0:
        raise UsageError(f"dataset {source!r} has no non-blank text in column {text_column!r} of its train split")

    train, held_out = _split_held_out(splits, held_out_split, validation_fraction, seed, source)
    return Reviews(train, held_out, source, text_column, label_column)


def load_dataset_splits(source: str) -> DatasetDict:
    """A local path by its ending or as a saved `datasets` directory; anything else is taken as a Hub id."""
    path = os.path.expanduser(source)
    ending = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        try:
            loaded = datasets.load_from_disk(path)
        except FileNotFoundError as error:
            raise UsageError(f"{source!r} is a directory but not one saved by `datasets` ({error})") from None
        except UNREADABLE as error:
            raise UsageError(f"{source!r} looks saved by `datasets` but does not load: "
                             f"{_reason(error)}") from None
    elif os.path.isfile(path):
        if ending not in LOCAL_BUILDERS:
            raise UsageError(f"{source!r}: unsupported file type {ending or '(none)'}; use {', '.join(LOCAL_BUILDERS)}")
        if os.path.getsize(path) == 0:
            raise UsageError(f"{source!r} is empty")
        if LOCAL_BUILDERS[ending] != "parquet":
            _check_utf8(path, source)
        try:
            with _builder_errors_unlogged():
                loaded = datasets.load_dataset(LOCAL_BUILDERS[ending], data_files={"train": path})
        except UNREADABLE as error:
            if NO_ROWS in str(error):
                raise UsageError(f"{source!r} holds no reviews: no rows of data in it") from None
            shape = ' (one JSON object per line, like {"text": "..."})' if ending == ".jsonl" else ""
            raise UsageError(f"cannot read {source!r} as {ending[1:]}{shape}: {_reason(error)}") from None
    elif ending in LOCAL_BUILDERS or os.sep in source.strip("/") and source.startswith((".", "/", "~")):
        raise UsageError(f"no such file or directory: {source!r}")
    else:
        loaded = _load_from_hub(source)
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    return loaded


def _check_utf8(path: str, source: str) -> None:
    """
    Text formats are read as UTF-8. Checked here because `datasets` reads a jsonl in another encoding without
    complaint and the bad bytes only surface later, deep inside pyarrow, as a traceback.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                line += chunk[: error.start].count(b"\n")
                break
            line += chunk.count(b"\n")
        else:
            try:
                decoder.decode(b"", final=True)
                return
            except UnicodeDecodeError:
                pass  # it ends inside a character: the last line is the bad one
    raise UsageError(f"{source!r} is not UTF-8 text (line {line}); save it as UTF-8")


@contextmanager
def _builder_errors_unlogged():
    """The parquet builder logs a file it cannot read before raising; the error it raises is reported once, above."""
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)


def _reason(error: BaseException) -> str:
    """The first line of what went wrong underneath (`datasets` wraps the reader's error in its own)."""
    if isinstance(error, datasets.exceptions.DatasetGenerationError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, KeyError):
        return f"a file in it has no {error} entry"
    return _first_line(error)


def _load_from_hub(repo_id: str) -> DatasetDict:
    try:
        return datasets.load_dataset(repo_id)
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError) as error:
        raise UsageError(
            f"unknown dataset {repo_id!r}: no such local path, and the Hub says: {_first_line(error)}"
        ) from None
    except ConnectionError as error:
        raise UsageError(f"cannot reach the Hub for dataset {repo_id!r}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_column(splits: DatasetDict, column: str, option: str, source: str) -> None:
    columns = splits["train"].column_names
    if column not in columns:
        raise UsageError(f"dataset {source!r} has no column {column!r} ({option}); its columns: {', '.join(columns)}")


def _resolve_label_column(splits: DatasetDict, label_column: str | None, need_stars: bool, source: str) -> str | None:
    if label_column is not None:
        _check_column(splits, label_column, "--label-column", source)
        return label_column
    found = next((name for name in LABEL_COLUMN_GUESSES if name in splits["train"].column_names), None)
    if found is None and need_stars:
        columns = ", ".join(splits["train"].column_names)
        raise UsageError(f"star ratings needed but dataset {source!r} has no 'stars' or 'label' column ({columns}); "
                         "name it with --label-column")
    return found


def _standardise(split: Dataset, text_column: str, label_column: str | None) -> Dataset:
    """Keeps only `text` and the raw label (as `stars`), so later steps need not know the dataset's names."""
    keep = {text_column: "text", **({label_column: "stars"} if label_column else {})}
    split = split.select_columns(list(keep))
    renames = {old: new for old, new in keep.items() if old != new}
    return split.rename_columns(renames) if renames else split


def star_offset(feature, values: set) -> int:
    """
    The mapping rule from a label column to star ratings 1-5, as the number to add to each label:

    - a `ClassLabel` with five classes (the Hub's `Yelp/yelp_review_full`: 0-4 for "1 star".."5 stars"): +1;
    - whole numbers 1-5 (a local `stars` column): as they are;
    - whole numbers 0-4 that include 0: +1.

    Anything else is refused, naming a value outside the rule.
    """
    if isinstance(feature, ClassLabel):
        if feature.num_classes != 5:
            raise UsageError(f"the label column has {feature.num_classes} classes; star ratings need 5")
        return 1
    bad = sorted((value for value in values if not _is_whole(value)), key=str)
    if bad:
        raise UsageError(f"labels outside the star mapping (1-5 or 0-4): got {bad[0]!r}")
    numbers = {int(value) for value in values}
    if numbers <= set(range(1, 6)):
        return 0
    if numbers <= set(range(5)):
        return 1
    outside = sorted(numbers - set(range(6)))
    raise UsageError(
        f"labels outside the star mapping (1-5 or 0-4): got {outside[0] if outside else 'both 0 and 5'}"
    )


def _is_whole(value) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _map_stars(splits: DatasetDict, label_column: str, source: str) -> DatasetDict:
    values = set()
    for split in splits.values():
        values.update(split.unique("stars"))
    try:
        offset = star_offset(splits["train"].features["stars"], values)
    except UsageError as error:
        raise UsageError(f"dataset {source!r}, column {label_column!r}: {error}") from None
    return DatasetDict(
        {
            name: split.map(
                lambda batch: {"stars": [int(value) + offset for value in batch["stars"]]},
                batched=True,
                features=datasets.Features({**split.features, "stars": datasets.Value("int8")}),
                desc="mapping labels to stars",
            )
            for name, split in splits.items()
        }
    )


def _refuse_non_text(splits: DatasetDict, text_column: str, source: str) -> None:
    """Numbers or nulls where the text should be are a broken file: refused with a count, never dropped in silence."""
    for name, split in splits.items():
        bad = [index for index, text in enumerate(split["text"]) if not isinstance(text, str)]
        if bad:
            example = split[bad[0]]["text"]
            raise UsageError(
                f"dataset {source!r}, split {name}: {len(bad)} of {len(split)} rows have no text in column "
                f"{text_column!r} (row {bad[0] + 1} has {example!r}); fix or remove them"
            )


def _has_text(review: dict) -> bool:
    return isinstance(review["text"], str) and bool(review["text"].strip())


def _split_held_out(
    splits: DatasetDict, held_out_split: str | None, validation_fraction: float, seed: int, source: str
) -> tuple[Dataset, Dataset]:
    if held_out_split == ALL_REVIEWS and ALL_REVIEWS not in splits:
        every = concatenate_datasets(list(splits.values()))
        return every.select([]), every
    if held_out_split is not None:
        if held_out_split not in splits:
            raise UsageError(f"dataset {source!r} has no split {held_out_split!r} (splits: {', '.join(splits)})")
        name = held_out_split
    else:
        name = next((name for name in HELD_OUT_SPLITS if name in splits), None)
    if name is not None and name != "train":
        if len(splits[name]) == 0:
            raise UsageError(f"dataset {source!r}: the held-out split {name!r} has no non-blank reviews")
        return splits["train"], splits[name]
    train = splits["train"]
    if len(train) < 2:
        raise UsageError(f"dataset {source!r} has {len(train)} review(s): too few to hold out a validation part")
    parts = train.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def build_tokenizer(reviews: Reviews, coverage: float = 0.9999) -> CharLSTMTokenizer:
    """The vocabulary of the training split only, so held-out text meets `<unk>` as unseen text would."""
    return CharLSTMTokenizer.from_corpus(reviews.train["text"], coverage=coverage)


def pack_reviews(
    reviews: Dataset,
    tokenizer: CharLSTMTokenizer,
    seq_len: int,
    condition_on_stars: bool,
    num_proc: int | None = None,
    desc: str = "packing",
    unrated_share: float = 0.0,
) -> Dataset:
    """
    Frames each review as `<bos> [<Nstar>] text <eos>`, joins them and cuts the stream into blocks of `seq_len + 1`
    tokens that overlap by one, so every token after the first is predicted exactly once. The loss skips `<bos>`
    and the star token: a conditioned model is told the rating, not asked to guess it, and bpc counts the text
    and `<eos>` only. With `condition_on_stars`, a `star_ids` column gives every position the rating of the review
    it belongs to (0 at `<bos>`), which a block cut from inside a review could not read from its tokens.
    `unrated_share` of the reviews (chosen by a hash of their text) go without their star token and with rating 0,
    so the model also learns reviews with no rating given, as `model.generate` or `pipeline` without a star token
    asks for them.
    `datasets.map` caches the result and can run it in `num_proc` processes.
    """
    if seq_len < 1:
        raise UsageError(f"--seq-len must be at least 1, got {seq_len}")
    if condition_on_stars and "stars" not in reviews.column_names:
        raise UsageError("--condition-on-stars needs star ratings, but the data has no label column")
    if not 0.0 <= unrated_share < 1.0:
        raise UsageError(f"--unrated-share must be in [0, 1), got {unrated_share}")
    framing = _Framing(tokenizer, seq_len, condition_on_stars, unrated_share)
    columns = ("input_ids", "labels", "star_ids") if condition_on_stars else ("input_ids", "labels")
    return reviews.map(
        framing,
        batched=True,
        batch_size=1000,
        remove_columns=reviews.column_names,
        num_proc=num_proc if num_proc and num_proc > 1 and len(reviews) >= 2 * num_proc else None,
        features=datasets.Features({name: datasets.List(datasets.Value("int32")) for name in columns}),
        desc=desc,
    )


class _Framing:
    """The batched `map` function of `pack_reviews`; a class so that `datasets` can hash it for its cache."""

    def __init__(self, tokenizer: CharLSTMTokenizer, seq_len: int, condition_on_stars: bool, unrated_share=0.0):
        self.tokenizer = tokenizer
        self.block = seq_len + 1
        self.condition_on_stars = condition_on_stars
        self.unrated_below = int(unrated_share * 2**32)  # reviews whose text hashes below this go unrated
        self.star_ids = {stars: tokenizer.convert_tokens_to_ids(star_token(stars)) for stars in range(1, 6)}
        # A plain dict lookup per character: 20x faster than convert_tokens_to_ids, and a literal "<5star>"
        # inside a review stays seven characters (only single characters are looked up).
        self.ids = tokenizer.get_vocab()

    def frame(self, batch: dict) -> tuple[list[int], list[int], list[int]]:
        """
        The batch's reviews as one stream of ids, the labels the loss reads (prefix tokens ignored) and the rating
        of each position: 0 at `<bos>`, then the review's stars (0 throughout without `condition_on_stars`), as the
        model reads them from the tokens of a whole review (`ratings_in_force`).
        """
        tokenizer, lookup, unk = self.tokenizer, self.ids.get, self.tokenizer.unk_token_id
        ids, labels, stars = [], [], []
        for index, text in enumerate(batch["text"]):
            chars = [lookup(char, unk) for char in text]
            prefix = [tokenizer.bos_token_id]
            rating = 0
            if self.condition_on_stars and zlib.crc32(text.encode("utf-8")) >= self.unrated_below:
                rating = batch["stars"][index]
                prefix.append(self.star_ids[rating])
            ids += prefix + chars + [tokenizer.eos_token_id]
            labels += [IGNORE_INDEX] * len(prefix) + chars + [tokenizer.eos_token_id]
            stars += [0] + [rating] * (len(prefix) + len(chars))
        return ids, labels, stars

    def __call__(self, batch: dict) -> dict:
        ids, labels, stars = self.frame(batch)
        pad = self.tokenizer.pad_token_id
        blocks = {"input_ids": [], "labels": [], **({"star_ids": []} if self.condition_on_stars else {})}
        for start in range(0, max(len(ids) - 1, 0), self.block - 1):
            block_ids, block_labels = ids[start : start + self.block], labels[start : start + self.block]
            padding = self.block - len(block_ids)
            blocks["input_ids"].append(block_ids + [pad] * padding)
            # The first label of a block is never read (the model shifts labels); ignoring it keeps counts exact.
            blocks["labels"].append([IGNORE_INDEX] + block_labels[1:] + [IGNORE_INDEX] * padding)
            if self.condition_on_stars:
                blocks["star_ids"].append(stars[start : start + self.block] + [0] * padding)
        return blocks


def framed_stream(reviews: Dataset, tokenizer: CharLSTMTokenizer, condition_on_stars: bool, unrated_share=0.0):
    """
    All reviews framed as `pack_reviews` frames them, as one stream: (ids, labels, star_ids) int32 arrays,
    star_ids None without `condition_on_stars`.
    """
    framing = _Framing(tokenizer, 1, condition_on_stars, unrated_share)
    ids, labels, stars = [], [], []
    for batch in reviews.iter(batch_size=1000):
        for stream, part in zip((ids, labels, stars), framing.frame(batch)):
            stream.append(np.asarray(part, dtype=np.int32))
    return np.concatenate(ids), np.concatenate(labels), (np.concatenate(stars) if condition_on_stars else None)


class ParallelStreams(torch.utils.data.Dataset):
    """
    The framed review stream cut into `rows` contiguous streams of blocks, for training that carries the LSTM state
    from one block to the next (truncated backpropagation through time).

    Item `i` is block `i // rows` of stream `i % rows`: a sequential sampler with batches of `rows` blocks gives
    batch t = block t of every stream, so row b of step t continues row b of step t-1. Under DDP, `rows` is the
    batch size times the number of processes: accelerate deals whole batches out in turn, so each process gets
    block t of its own `batch_size` streams at its step t. Blocks overlap by one token as `pack_reviews` blocks do,
    and `block` says where in its stream an item lies (0: the stream starts here, from a zero state). The stream's
    tail too short to give every row one more block is dropped.
    """

    def __init__(self, ids: np.ndarray, labels: np.ndarray, stars: np.ndarray | None, seq_len: int, rows: int):
        self.ids, self.labels, self.stars, self.seq_len, self.rows = ids, labels, stars, seq_len, rows
        self.blocks_per_stream = (len(ids) - 1) // (rows * seq_len)
        if self.blocks_per_stream < 1:
            raise UsageError(f"--carry-state lays the {len(ids):,} training tokens out as {rows} streams of "
                             f"{seq_len}-token blocks: too few tokens for even one block per stream")

    def __len__(self) -> int:
        return self.rows * self.blocks_per_stream

    def __getitem__(self, index: int) -> dict:
        block, row = divmod(index, self.rows)
        start = (row * self.blocks_per_stream + block) * self.seq_len
        ids = self.ids[start : start + self.seq_len + 1].astype(np.int64)
        labels = self.labels[start : start + self.seq_len + 1].astype(np.int64)
        labels[0] = IGNORE_INDEX  # predicted by the block before: every token is predicted once, as in packing
        item = {"input_ids": ids, "labels": labels, "block": block}
        if self.stars is not None:
            item["star_ids"] = self.stars[start : start + self.seq_len + 1].astype(np.int64)
        return item

"""The detector's labelled data: real reviews the generator never trained on, reviews the generator wrote, and
labelled reviews from other people's generators (`charlstm.detection.labelled`).

Machine reviews are written across a spread of sampling settings (temperature, top-k, top-p, star prompt, length
cap), so a detector cannot learn one setting's quirks; every setting is kept as a column so that evaluation can
report per setting. Human and machine texts pass the same length filter, and both classes are equally many in
the train and test splits. A machine review cut off by its length cap ends at its last full sentence. Every source
is split on its own, so each is in both splits in its own proportions and evaluation can report per source.
"""

import json
import random
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets

from ..errors import UsageError
from ..generation.sampling import ReviewGenerator
from ..generation.settings import GenerationSettings, Limits, check_settings
from ..runfiles import TRAINING_LOG
from ..training.data import Reviews, load_reviews
from .settings import HUMAN, LABELS, MACHINE, SamplingGrid

FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "label": ClassLabel(names=LABELS),
        "source": datasets.Value("string"),  # the data set the row came from (for own rows: the generator or data)
        "generator": datasets.Value("string"),  # who wrote it: "human", or the model's name
        "domain": datasets.Value("string"),  # what is reviewed (e.g. yelp restaurants, amazon products), when known
        "temperature": datasets.Value("float64"),  # the sampling settings are None for human reviews
        "top_k": datasets.Value("int32"),
        "top_p": datasets.Value("float64"),
        "max_new_tokens": datasets.Value("int32"),
        "stars": datasets.Value("int8"),  # the rating asked for (machine) or given (human), when known
        "length": datasets.Value("int32"),  # characters in `text`
    }
)


def held_out_reviews(generator_dir, human_data=None, validation_fraction=None, data_seed=None) -> Reviews:
    """
    The real reviews the generator never trained on: its training data split as `charlstm train` split it, with
    the dataset, columns, split, fraction and seed its training_log.json records. Arguments given override the log.
    """
    log_path = Path(generator_dir) / TRAINING_LOG
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    source = human_data or log.get("dataset")
    if source is None:
        raise UsageError(f"{generator_dir} has no {TRAINING_LOG} naming its training data: give --human-data")
    if validation_fraction is None:
        validation_fraction = log.get("validation_fraction", 0.05)
    if data_seed is None:
        data_seed = log.get("seed", 0)
    return load_reviews(
        source,
        log.get("text_column", "text"),
        log.get("label_column"),
        held_out_split=log.get("eval_split"),
        validation_fraction=validation_fraction,
        seed=data_seed,
    )


def human_rows(
    reviews: Dataset, source: str, count: int, min_chars: int, seed: int, exclude: frozenset[str] = frozenset(),
    domain: str = "unknown",
) -> list[dict]:
    """`count` reviews of at least `min_chars` characters and not in `exclude`, drawn with `seed`."""
    usable = reviews.filter(
        lambda review: len(review["text"]) >= min_chars and review["text"] not in exclude,
        desc="dropping short and excluded reviews",
    )
    if len(usable) < count:
        left_out = " and not in the excluded data" if exclude else ""
        raise UsageError(
            f"{source} has {len(usable)} held-out reviews of at least {min_chars} characters{left_out}; "
            f"{count} were asked for"
        )
    chosen = usable.shuffle(seed=seed).select(range(count))
    stars = chosen["stars"] if "stars" in chosen.column_names else [None] * count
    return [
        _row(text, HUMAN, source, "human", domain, stars=rating) for text, rating in zip(chosen["text"], stars)
    ]


def machine_rows(
    generator: ReviewGenerator, count: int, grid: SamplingGrid, min_chars: int, batch_size: int, seed: int,
    domain: str = "unknown",
) -> list[dict]:
    """
    `count` reviews written by `generator`, in equal shares per temperature; each `generate` call writes
    `batch_size` reviews with its own top-k, top-p, star prompt, length cap and seed. A review that runs into its
    length cap is cut back to its last sentence end (if it has one), as someone passing it off as real would do
    (a text that stops mid-word would be too easy to catch). Reviews shorter than `min_chars` after that are
    dropped, as short human reviews are, and more are written.
    """
    rng = random.Random(seed)
    rows: list[dict] = []
    shares = [count // len(grid.temperatures) + (index < count % len(grid.temperatures))
              for index in range(len(grid.temperatures))]
    for temperature, share in zip(grid.temperatures, shares):
        written, batches = 0, 0
        while written < share:
            if batches >= 10 * (share // batch_size + 1):
                raise UsageError(
                    f"at temperature {temperature} the generator wrote only {written} of {share} reviews of at least "
                    f"{min_chars} characters in {batches} batches: it ends reviews too early for this --min-chars"
                )
            settings = check_settings(
                GenerationSettings(
                    stars=rng.randint(1, 5) if generator.conditioned_on_stars else None,
                    num_reviews=batch_size,
                    temperature=temperature,
                    top_k=rng.choice(grid.top_ks),
                    top_p=rng.choice(grid.top_ps),
                    max_new_tokens=rng.choice(grid.max_new_tokens),
                    seed=rng.randrange(2**32),
                ),
                Limits(max_num_reviews=batch_size, max_new_tokens=max(grid.max_new_tokens)),
            )
            batches += 1
            for text in generator.generate(settings):
                if len(text) >= settings.max_new_tokens:  # no <eos>: it ran into the cap
                    text = up_to_last_sentence_end(text)
                if len(text) >= min_chars and written < share:
                    rows.append(_row(text, MACHINE, own_source(generator), own_source(generator), domain, settings))
                    written += 1
    return rows


def own_source(generator: ReviewGenerator) -> str:
    """The `source` of the generator's own rows, its samples and the held-out reviews beside them: its name."""
    return Path(str(generator.source).rstrip("/")).name or str(generator.source)


def up_to_last_sentence_end(text: str) -> str:
    """The text up to and including its last '.', '!' or '?'; all of it when it has none."""
    end = max(text.rfind(mark) for mark in ".!?")
    return text[: end + 1] if end >= 0 else text


def build_detector_data(
    generator: ReviewGenerator,
    human_reviews: Dataset,
    human_source: str,
    count: int,
    grid: SamplingGrid = SamplingGrid(),
    min_chars: int = 50,
    batch_size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    exclude: frozenset[str] = frozenset(),
    labelled: list[dict] = (),
    human_count: int | None = None,
) -> DatasetDict:
    """
    `human_count` (default `count`) human and `count` machine reviews, plus the `labelled` rows, split into train
    and test: each source on its own, stratified by label. More human reviews than machine ones balance labelled
    sets that are mostly machine text of the same domain, so that the domain itself does not read as machine.
    Human reviews in `exclude` are not used: a further set (e.g. to calibrate a detector) stays apart from earlier
    ones. `count` may be 0 when labelled rows are given.
    """
    human_count = count if human_count is None else human_count
    if count < (0 if labelled else 2) or count == 1:
        raise UsageError(f"--count must be 0 (with --labelled) or at least 2 (one review per class in each split), "
                         f"got {count}")
    if count and human_count < 2:
        raise UsageError(f"--human-count must be at least 2 (one review in each split), got {human_count}")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    rows = list(labelled)
    if count:
        domain = Path(human_source).stem or human_source
        rows += human_rows(human_reviews, own_source(generator), human_count, min_chars, seed, exclude, domain)
        rows += machine_rows(generator, count, grid, min_chars, batch_size, seed, domain)
    table = Dataset.from_list([{name: row.get(name) for name in FEATURES} for row in rows], features=FEATURES)
    splits = [_split(table.filter(lambda row, name=name: row["source"] == name), test_fraction, seed)
              for name in dict.fromkeys(table["source"])]
    return DatasetDict({name: concatenate_datasets([split[name] for split in splits]) for name in ("train", "test")})


def _split(source_rows: Dataset, test_fraction: float, seed: int) -> DatasetDict:
    """One source's rows into train and test, both labels in their proportions."""
    fewest = min(source_rows["label"].count(label) for label in (HUMAN, MACHINE))
    if fewest < 2:
        raise UsageError(f"source {source_rows[0]['source']!r} has {fewest} rows of one label: at least 2 of each "
                         "are needed to test on it")
    return source_rows.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")


def _row(text: str, label: int, source: str, generator: str, domain: str, settings: GenerationSettings | None = None,
         stars=None) -> dict:
    return {
        "text": text,
        "label": label,
        "source": source,
        "generator": generator,
        "domain": domain,
        "temperature": settings and settings.temperature,
        "top_k": settings and settings.top_k,
        "top_p": settings and settings.top_p,
        "max_new_tokens": settings and settings.max_new_tokens,
        "stars": settings.stars if settings else stars,
        "length": len(text),
    }


def load_detector_data(path: str, needs: tuple[str, ...] = ()) -> datasets.DatasetDict:
    """
    A directory written by `charlstm detector build-data`, holding at least the splits in `needs`, or a UsageError
    that says what it is instead.
    """
    try:
        data = datasets.load_from_disk(path)
    except FileNotFoundError:
        raise UsageError(f"{path} is not a directory written by `charlstm detector build-data`") from None
    if not isinstance(data, datasets.DatasetDict) or not {"text", "label"} <= set(data[next(iter(data))].column_names):
        raise UsageError(f"{path} is not detector data: expected splits with 'text' and 'label' columns")
    missing = [name for name in needs if name not in data]
    if missing:
        raise UsageError(f"{path} has no {' or '.join(missing)} split (splits: {', '.join(data)})")
    return data


def without_sources(data: datasets.DatasetDict, sources: list[str]) -> datasets.DatasetDict:
    """`data` with every row of `sources` removed from each split; a name the data does not have is a UsageError."""
    if not sources:
        return data
    known = set().union(*(split.unique("source") for split in data.values() if "source" in split.column_names))
    unknown = sorted(set(sources) - known)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise UsageError(f"the data has no source {names} (sources: {', '.join(sorted(known))})")
    left_out = set(sources)
    return datasets.DatasetDict({
        name: split.filter(lambda source: source not in left_out, input_columns="source")
        for name, split in data.items()
    })

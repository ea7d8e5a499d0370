"""The Hub model card (README.md) of a saved generator or detector, filled in from the run's own log.

The templates are package data in `templates/`: `model_card.md` (generator; the project's top-level design card)
and `detector_card.md` (detector). The YAML metadata is built with huggingface_hub's `ModelCardData`, and the body
rendered with `ModelCard.from_template` (Jinja), so the front matter is always valid YAML the Hub understands
(model-index included). Every figure comes from `training_log.json` / `detector_log.json`; one that a run did not
record is shown as "not measured" rather than failing the render.
"""

import json
import math
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open
from transformers import GenerationConfig, pipeline

from .. import register
from ..detection.decision import DetectorDecision
from ..errors import MissingFileError, UsageError
from ..generation.sampling import load_generator
from ..generation.settings import GenerationSettings, check_settings
from ..loading import DETECTOR, kind_of, load_config, load_model
from ..runfiles import DETECTOR_LOG, TRAINING_CURVES, TRAINING_LOG

# Package data. templates/model_card.md is a link to the design card at the top of the repository; a build copies it.
TEMPLATES = Path(__file__).resolve().parent / "templates"
GENERATOR_TEMPLATE = TEMPLATES / "model_card.md"
DETECTOR_TEMPLATE = TEMPLATES / "detector_card.md"
POOLING_WORDS = {
    "last": "the top layer's state at the last character",
    "mean": "the mean of the top layer's states over all characters",
}
LICENSE = "apache-2.0"  # the project's licence (pyproject.toml); the card states the training data's terms
YELP_TERMS = "the Yelp Dataset Terms of Use (academic, non-commercial use)"
# The terms the review text of a detector training source comes under, by the domain build-data recorded for it.
DOMAIN_TERMS = {
    "yelp": YELP_TERMS,
    "yelp_reviews": YELP_TERMS,
    "amazon": "Amazon's conditions for its customer reviews (research use)",
}
UNKNOWN_TERMS = "see the source's own licence"
NOT_MEASURED = "not measured"
SAMPLE_SEED = 0
SAMPLE_CHARACTERS = 400
WIDGET_PROMPTS = ((5, "The tacos here are"), (1, "We waited forty minutes and"))
# Texts of our own for the detector's widget; the detector scores them when the card is rendered.
DETECTOR_EXAMPLES = (
    "Came in for a late lunch on a Tuesday. The pho broth was rich and the herbs were fresh, but the spring rolls "
    "were a little soggy. Friendly service, fair prices, easy parking. I would come back for the soup.",
    "The food was great and the service was great. The staff was very friendly and the food was very good. I will "
    "definitely be back again. The food was great and the service was great.",
)

# The detector's card is scored by loading it through the Auto classes.
register()


def render_model_card(
    model_dir: str | os.PathLike,
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    samples: dict[int | None, str] | None = None,
    dataset_id: str | None = None,
    detector_id: str | None = None,
) -> str:
    """
    The README.md for the generator or detector saved in `model_dir`. `repo_id` and `revision` fill the loading
    instructions (placeholders when not known yet). Generator only: `samples` maps a star rating (None for an
    unconditioned model) to a sample review; by default they are generated now with a fixed seed. `dataset_id` is
    the Hub dataset for the metadata when the training log names a local file; `detector_id` is linked from the
    section on misuse.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MissingFileError(f"{model_dir} is not a saved model directory (no config.json)")
    if kind_of(load_config(str(model_dir))) == DETECTOR:
        return _render_detector_card(model_dir, repo_id, revision)
    return _render_generator_card(model_dir, repo_id, revision, samples, dataset_id, detector_id)


def generate_samples(model_dir: str | os.PathLike, requests: list[tuple[int | None, str]],
                     max_new_tokens: int = SAMPLE_CHARACTERS, seed: int = SAMPLE_SEED) -> list[str]:
    """
    One review for each (star rating or None, start of the review) request, written through `charlstm.generation`
    with the model's own sampling defaults and a fixed seed, so `charlstm generate --stars N --seed 0` with the
    same settings reproduces them.
    """
    generator = load_generator(model_dir)
    sampling = sampling_defaults(model_dir)
    return [
        generator.generate(check_settings(GenerationSettings(
            prompt=prompt, stars=stars, max_new_tokens=max_new_tokens, seed=seed, **sampling
        )))[0]
        for stars, prompt in requests
    ]


def sampling_defaults(model_dir: str | os.PathLike) -> dict:
    """temperature, top_k, top_p from the model's generation_config.json (the library's defaults without one)."""
    try:
        config = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        config = GenerationConfig()
    return {"temperature": config.temperature or 1.0, "top_k": config.top_k or 0, "top_p": config.top_p or 1.0}


def _sampling_description(model_dir: Path, conditioned: bool) -> str:
    sampling = sampling_defaults(model_dir)
    guidance = f", rating guidance {GenerationSettings().guidance:g}" if conditioned else ""
    return (f"seed {SAMPLE_SEED}, temperature {sampling['temperature']}, top-k {sampling['top_k'] or 'off'}, "
            f"top-p {sampling['top_p']}{guidance}, at most {SAMPLE_CHARACTERS} characters")


def _render_generator_card(model_dir, repo_id, revision, samples, dataset_id, detector_id) -> str:
    log = _read_json(model_dir / TRAINING_LOG) or {}
    config = _read_json(model_dir / "config.json")
    final = _section(log, "final", model_dir / TRAINING_LOG)
    _section(log, "initialised_from", model_dir / TRAINING_LOG)
    yelp = _is_yelp(log.get("dataset"), dataset_id)
    conditioned = bool(config.get("conditioned_on_stars", log.get("conditioned_on_stars", False)))
    widget_prompts = {stars if conditioned else None: prompt for stars, prompt in WIDGET_PROMPTS}
    sample_ratings = [] if samples is not None else list(range(1, 6)) if conditioned else [None]
    texts = generate_samples(model_dir, [(stars, "") for stars in sample_ratings] + list(widget_prompts.items()))
    if samples is None:
        samples = dict(zip(sample_ratings, texts))
    widget_outputs = dict(zip(widget_prompts, texts[len(sample_ratings):]))
    dataset_id = dataset_id or _hub_dataset_id(log.get("dataset"))
    title = _title(model_dir, repo_id)
    eval_bpc = final.get("eval_bpc")
    eval_results = None
    if isinstance(eval_bpc, (int, float)):
        eval_results = [EvalResult(
            task_type="text-generation", dataset_type=dataset_id or _dataset_name(log.get("dataset")),
            dataset_name=f"{_dataset_name(log.get('dataset'))} (held-out reviews)", dataset_split="held-out",
            metric_type="bpc", metric_name="bits per character", metric_value=round(eval_bpc, 4),
        )]
    card_data = ModelCardData(
        language="en", license=LICENSE, library_name="transformers", pipeline_tag="text-generation",
        tags=["custom_code", "charlstm", "lstm", "character-level", "reviews"],
        datasets=[dataset_id] if dataset_id else None, metrics=["bpc"], model_name=title, eval_results=eval_results,
        widget=[{"text": _prompt_text(stars, prompt), "example_title": _sample_label(stars),
                 "output": {"text": widget_outputs[stars]}} for stars, prompt in widget_prompts.items()],
    )
    vocab_size = log.get("vocab_size") or config.get("vocab_size")
    per_star = _section(final, "eval_bpc_per_star", model_dir / TRAINING_LOG)
    context = dict(
        title=title,
        repo_id=repo_id or "NAMESPACE/NAME",
        revision=revision or "COMMIT_ID",
        revision_known=revision is not None,
        conditioned_on_stars=conditioned,
        star_embedding_dim=config.get("star_embedding_dim") or 0,
        dataset=_dataset_description(log.get("dataset"), dataset_id),
        train_reviews=_figure(log.get("train_reviews"), "{:,}"),
        eval_reviews=_figure(log.get("eval_reviews"), "{:,}"),
        train_characters=_figure(log.get("train_characters"), "{:,}"),
        vocab_size=_figure(vocab_size, "{:,}"),
        hidden_sizes=" x ".join(str(size) for size in log.get("hidden_sizes") or config.get("hidden_sizes") or [])
        or NOT_MEASURED,
        embedding_dim=_figure(log.get("embedding_dim") or config.get("embedding_dim"), "{:,}"),
        num_parameters=_figure(log.get("num_parameters"), "{:,}"),
        weights_size=_weights_size(model_dir),
        seq_len=_figure(log.get("seq_len"), "{:,}"),
        batch_size=_figure(log.get("batch_size"), "{:,}"),
        train_minutes=_figure(log.get("train_minutes"), "{:,.1f}"),
        device=log.get("device") or NOT_MEASURED,
        started_from=_earlier_stages(log.get("initialised_from")),
        uniform_bpc=_figure(math.log2(vocab_size) if vocab_size else None, "{:.2f}"),
        eval_bpc=_figure(eval_bpc, "{:.4f}"),
        bpc_per_star=[{"label": _sample_label(stars), "bpc": _figure(per_star.get(str(stars)), "{:.4f}")}
                      for stars in range(1, 6)] if conditioned else [],
        data_terms=YELP_TERMS if yelp else "the terms of its training data",
        review_kind=_review_kind(log.get("dataset"), yelp),
        curves_file=TRAINING_CURVES if (model_dir / TRAINING_CURVES).is_file() else None,
        sample_settings=_sampling_description(model_dir, conditioned),
        samples=[{"label": _sample_label(stars), "block": _fenced(text)} for stars, text in samples.items()],
        prompt_example=_prompt_text(5 if conditioned else None, "The tacos were"),
        guidance=f"{GenerationSettings().guidance:g}",
        detector_pointer=_detector_pointer(detector_id, yelp),
    )
    return _render(GENERATOR_TEMPLATE, card_data, context)


def _render_detector_card(model_dir, repo_id, revision) -> str:
    log = _read_json(model_dir / DETECTOR_LOG) or {}
    config = _read_json(model_dir / "config.json")
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json") or {}
    test = log.get("test") or {}
    title = _title(model_dir, repo_id)
    model, tokenizer, _ = load_model(str(model_dir), DETECTOR)
    decision = DetectorDecision.of(model.config, str(model_dir))
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    widget = [{"text": text, "example_title": f"example {number}",
               "output": [{"label": score["label"], "score": round(score["score"], 3)}
                          for score in classifier(text, top_k=None, truncation=True)]}
              for number, text in enumerate(DETECTOR_EXAMPLES, start=1)]
    metrics = {name: test.get(name) for name in ("roc_auc", "accuracy", "precision", "recall")}
    eval_results = [EvalResult(
        task_type="text-classification", dataset_type="charlstm-detector-data", dataset_name="charlstm detector data "
        "(held-out texts)", dataset_split="test", metric_type=name, metric_value=round(value, 4),
    ) for name, value in metrics.items() if isinstance(value, (int, float))] or None
    card_data = ModelCardData(
        language="en", license=LICENSE, library_name="transformers", pipeline_tag="text-classification",
        tags=["custom_code", "charlstm", "lstm", "character-level", "fake-review-detection"],
        metrics=list(metrics), model_name=title, eval_results=eval_results, widget=widget,
    )
    crop = log.get("crop_chars")
    seconds = log.get("train_seconds")
    max_length = tokenizer_config.get("model_max_length")
    context = dict(
        title=title,
        repo_id=repo_id or "NAMESPACE/NAME",
        revision=revision or "COMMIT_ID",
        revision_known=revision is not None,
        generator=Path(log["generator"]).name if log.get("generator") else NOT_MEASURED,
        train_texts=_figure(log.get("train_texts"), "{:,}"),
        crop_chars=f"{crop[0]}-{crop[1]} characters" if isinstance(crop, list) and len(crop) == 2 else NOT_MEASURED,
        optimisation=("none: the generator's layers as they are, logistic-regression heads on what they give"
                      if log.get("frozen") else
                      f"{_figure(log.get('max_steps'), '{:,}')}, {_figure(log.get('batch_size'), '{:,}')}"),
        hidden_sizes=" x ".join(str(size) for size in config.get("hidden_sizes") or []) or NOT_MEASURED,
        num_parameters=_figure(_parameter_count(model_dir), "{:,}"),
        pooling=_head_words(config),
        probabilities=_calibration_words(decision.calibration or {}),
        train_time=_figure(seconds / 60 if isinstance(seconds, (int, float)) else None, "{:,.1f} minutes")
        + (f" on {log['device']}" if isinstance(seconds, (int, float)) and log.get("device") else ""),
        max_characters=_figure(max_length - 1 if isinstance(max_length, int) and max_length < 10**6 else None, "{:,}"),
        test_texts=_figure(test.get("texts"), "{:,}"),
        sources=_source_rows(log),
        tested_on=[dict(row, roc_auc=_figure(row.get("roc_auc"), "{:.3f}"),
                        unseen_roc_auc=_figure(row.get("unseen_roc_auc"), "{:.3f}"),
                        false_positive_rate=_figure(row.get("false_positive_rate"), "{:.1%}"))
                   for row in decision.tested_on],
        threshold=_threshold_words(decision),
        uncertain_band=("P(machine) from {:.2f} to {:.2f}".format(*decision.uncertain_band)
                        if decision.uncertain_band else NOT_MEASURED),
        reading=_reading_words(decision),
        **{name: _figure(value, "{:.4f}") for name, value in metrics.items()},
    )
    return _render(DETECTOR_TEMPLATE, card_data, context)


def _ngram_words(characters: int, words: int) -> str:
    """"character 1-4-grams and word 1-2-grams" for the n-grams an n-gram head counts."""
    return " and ".join(f"{kind} 1-{longest}-grams" for kind, longest in (("character", characters), ("word", words))
                        if longest)


def _head_words(config: dict) -> str:
    """What the classification head reads: the pooled states, the n-grams and likelihood heads averaged in, and the
    own-sample head."""
    words = POOLING_WORDS.get(config.get("classifier_pooling", "last"), NOT_MEASURED)
    extra = []
    if config.get("ngram_buckets"):
        extra.append(f"the text's {_ngram_words(config.get('ngram_max_n', 4), config.get('ngram_word_max_n', 0))} "
                     "(TF-IDF, hashed)")
    if config.get("likelihood_features"):
        extra.append("how likely the generator finds each of its characters")
    words += f", averaged with a head on {' and one on '.join(extra)}" if extra else ""
    if config.get("own_sample_score"):
        rated = " and how much likelier once told the best rating" if config.get("conditioned_on_stars") else ""
        words += (f"; on texts that read like the generator's own domain, a head on how likely the generator finds "
                  f"them{rated}, fitted on its own samples, takes over where it is surer the text is machine-written")
    return words


def _calibration_words(calibration: dict) -> str:
    """What the detector's P(machine) is: the trained head's own, or calibrated, on what and how well."""
    texts = calibration.get("calibration_texts")
    if not isinstance(texts, int):
        return "as the classifier trained: not calibrated"
    where = ", the held-out texts of the results below" if calibration.get("split") == "test" else ""
    words = f"calibrated (Platt scaling of the head) on {texts:,} labelled texts it never trained on{where}"
    before, after = calibration.get("calibration_error_before"), calibration.get("calibration_error_after")
    if isinstance(before, float) and isinstance(after, float):
        words += (f"; expected calibration error {before:.3f} before, {after:.3f} after (each half of the texts "
                  "calibrated on the other)")
    return words


def _threshold_words(decision: DetectorDecision) -> str:
    threshold, rate = decision.threshold, decision.threshold_false_positive_rate
    if decision == DetectorDecision(calibration=decision.calibration, tested_on=decision.tested_on):
        return f"P(machine) >= {threshold:.3g} (no evaluation set a threshold)"
    if rate is None:
        return f"P(machine) >= {threshold:.3f}"
    return (f"P(machine) >= {threshold:.3f}, the lowest at which each source's held-out human texts were called "
            f"machine at most {rate:.0%} of the time")


def _reading_words(decision: DetectorDecision) -> str:
    """How `charlstm detect` reads P(machine), for pipeline and widget users, whose label flips at 0.5."""
    words = f"call a text machine-written at P(machine) >= {decision.threshold:.3g}"
    if decision.uncertain_band:
        words += ", and say \"uncertain\" from {:.2f} to {:.2f}".format(*decision.uncertain_band)
    return words


def _source_rows(log: dict) -> list[dict]:
    """The detector's training sources (`detector train`'s `train_sources`) as the card's table rows."""
    rows = []
    for entry in log.get("train_sources") or []:
        domain = str(entry.get("domain") or "unknown")
        rows.append({
            "source": entry.get("source", "unknown"),
            "domain": domain,
            "generators": ", ".join(entry.get("generators") or []) or "none",
            "human": _figure(entry.get("human"), "{:,}"),
            "machine": _figure(entry.get("machine"), "{:,}"),
            "terms": DOMAIN_TERMS.get(domain.lower(), UNKNOWN_TERMS),
        })
    return rows


def _render(template: Path, card_data: ModelCardData, context: dict) -> str:
    if not template.is_file():
        raise FileNotFoundError(f"the model card template {template} is missing: the package was built without it")
    return str(ModelCard.from_template(card_data, template_path=str(template), **context))


def _earlier_stages(start: dict | None) -> str | None:
    """How a warm-started model's starting point was trained, stage by stage, newest first."""
    stages = []
    while start:
        stages.append(f"{start['model']} ({_figure(start.get('train_minutes'), '{:,.1f}')} minutes on "
                      f"{start.get('device') or NOT_MEASURED}, {_figure(start.get('steps'), '{:,}')} steps of batch "
                      f"{_figure(start.get('batch_size'), '{:,}')})")
        start = start.get("initialised_from")
    return ", which started from ".join(stages) or None


def _figure(value, spec: str) -> str:
    """A number formatted for the card, or "not measured" when the run did not record it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return NOT_MEASURED
    return spec.format(value)


def _read_json(path: Path) -> dict | None:
    """
    The JSON object in `path`, or None when there is no such file (a card still renders, its figures "not
    measured"). A file that is there but unreadable is a UsageError: a card of "not measured" would hide it.
    """
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} cannot be read as JSON ({error}): fix or remove it") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds a JSON {type(value).__name__}, not an object: fix or remove it")
    return value


def _section(log: dict, key: str, path: Path) -> dict:
    """A part of a log that must be an object when present (`final`, `initialised_from`)."""
    value = log.get(key) or {}
    if not isinstance(value, dict):
        raise UsageError(f"{path}: {key!r} is a {type(value).__name__}, not an object: fix or remove it")
    return value


def _title(model_dir: Path, repo_id: str | None) -> str:
    return (repo_id or model_dir.resolve().name).split("/")[-1]


def _hub_dataset_id(dataset: str | None) -> str | None:
    """The training log's dataset when it is a Hub id (`namespace/name`), not a local file or directory."""
    if not dataset or os.path.exists(dataset) or os.path.isabs(dataset) or dataset.startswith("."):
        return None
    return dataset if re.fullmatch(r"[\w.-]+/[\w.-]+", dataset) else None


def _dataset_name(dataset: str | None) -> str:
    return Path(dataset).stem if dataset else "reviews"


def _is_yelp(dataset: str | None, dataset_id: str | None) -> bool:
    return "yelp" in f"{dataset} {dataset_id}".lower()


def _review_kind(dataset: str | None, yelp: bool) -> str:
    """What the model writes, by what it was trained on: the project's Yelp model is not every user's."""
    if yelp:
        return "Yelp-style reviews"
    return f"reviews like those of `{Path(dataset).name}`" if dataset else "reviews"


def _dataset_description(dataset: str | None, dataset_id: str | None) -> str:
    if dataset_id:
        return f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})"
    if dataset and _is_yelp(dataset, None):
        return (f"`{Path(dataset).name}`, real Yelp reviews with their star ratings (Yelp Open Dataset samples and "
                "public restaurant pages, 2005-2022); the data is not published with the model")
    if dataset:
        return f"`{Path(dataset).name}`, a local file; the data is not published with the model"
    return NOT_MEASURED


def _weights_size(model_dir: Path) -> str:
    sizes = [path.stat().st_size for path in model_dir.glob("*.safetensors")]
    return f"{sum(sizes) / 1e6:.1f} MB (safetensors)" if sizes else NOT_MEASURED


def _parameter_count(model_dir: Path) -> int | None:
    paths = sorted(model_dir.glob("*.safetensors"))
    if not paths:
        return None
    total = 0
    for path in paths:
        with safe_open(str(path), framework="pt") as weights:
            slices = [weights.get_slice(name) for name in weights.keys()]
            total += sum(math.prod(part.get_shape()) for part in slices)
    return total


def _prompt_text(stars: int | None, prompt: str) -> str:
    """What a user types to ask for `stars`: the tokenizer reads a written star token as that token."""
    return f"<{stars}star>{prompt}" if stars else prompt


def _sample_label(stars: int | None) -> str:
    return f"{stars} star{'s' if stars != 1 else ''}" if stars else "no rating asked for"


def _fenced(text: str) -> str:
    """`text` as a Markdown code block whose fence no run of backticks inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _detector_pointer(detector_id: str | None, yelp: bool) -> str:
    """Where a detector for this generator's text is; the project's own was trained against its Yelp generator."""
    if detector_id:
        return (f"A detector trained against this generator is published as [{detector_id}]"
                f"(https://huggingface.co/{detector_id}): it tells its reviews from human ones.")
    if yelp:
        return ("The charlstm project ships a detector trained against its Yelp generator (`charlstm detect`, "
                "`CharLSTMForSequenceClassification` with labels `human` / `machine`) that tells that generator's "
                "reviews from human ones.")
    return ("The charlstm project ships a detector trained against its Yelp generator, not against this one: "
            "`charlstm detector build-data` and `charlstm detector train` build one for this generator's text.")

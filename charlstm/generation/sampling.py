"""Writing reviews: user settings in, one `model.generate` call out, for `charlstm generate` and the Space alike.

Everything between a person's settings and `generate` lives here (checking the settings, building the prompt,
seeding, streaming, stopping early), so the command line and the Space give the same reviews for the same seed.
"""

import os
import queue
import random
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from ..quantization import quantize
from ..tokenization_charlstm import star_token

# The model the project ships, made by `charlstm train`; used whenever no model is named.
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "bundled" / "charlstm-yelp"
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Limits:
    """Upper bounds on the settings. The Space passes tighter ones than the command line."""

    max_prompt_chars: int = 1000
    max_new_tokens: int = 4000
    max_num_reviews: int = 16
    max_temperature: float = 5.0


@dataclass(frozen=True)
class GenerationSettings:
    """
    prompt: the start of the review(s); may be empty. stars: 1-5 asks a star-conditioned model for that rating.
    num_reviews: how many reviews to write at once (one batch). top_k=0 and top_p=1.0 switch those filters off.
    seed: the same seed and settings give the same reviews; None picks one (see `check_settings`).
    """

    prompt: str = ""
    stars: int | None = None
    num_reviews: int = 1
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 300
    seed: int | None = None


def check_settings(settings: GenerationSettings, limits: Limits = Limits()) -> GenerationSettings:
    """
    Rejects absurd settings with a ValueError naming the setting and the allowed range. Returns the settings with
    whole numbers as `int` (a UI may send 5.0) and a random seed filled in when none was given, so the caller can
    show the seed that reproduces the result.
    """
    if not isinstance(settings.prompt, str):
        raise ValueError(f"prompt must be text, got {type(settings.prompt).__name__}")
    if len(settings.prompt) > limits.max_prompt_chars:
        raise ValueError(
            f"prompt is {len(settings.prompt)} characters long; the limit is {limits.max_prompt_chars}"
        )
    stars = None if settings.stars is None else _whole_number("stars", settings.stars, 1, 5)
    temperature = _number("temperature", settings.temperature)
    if not 0.0 < temperature <= limits.max_temperature:
        raise ValueError(f"temperature must be above 0 and at most {limits.max_temperature}, got {temperature}")
    top_p = _number("top_p", settings.top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be above 0 and at most 1 (1 = off), got {top_p}")
    seed = settings.seed
    # A chosen seed is never 0, which the Space reads as "pick one for me".
    seed = random.SystemRandom().randint(1, MAX_SEED) if seed is None else _whole_number("seed", seed, 0, MAX_SEED)
    return replace(
        settings,
        stars=stars,
        num_reviews=_whole_number("number of reviews", settings.num_reviews, 1, limits.max_num_reviews),
        temperature=temperature,
        top_k=_whole_number("top_k", settings.top_k, 0, None),
        top_p=top_p,
        max_new_tokens=_whole_number("max_new_tokens", settings.max_new_tokens, 1, limits.max_new_tokens),
        seed=seed,
    )


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _whole_number(name: str, value, low: int, high: int | None) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if number < low or (high is not None and number > high):
        allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {allowed}, got {int(number)}")
    return int(number)


class ReviewsSoFar(NamedTuple):
    """The text of every review in the batch (prompt included) and whether each one has ended."""

    texts: tuple[str, ...]
    finished: tuple[bool, ...]


class BatchCharacterStreamer(BaseStreamer):
    """
    Receives every generated character of a whole batch from `generate` and hands out `ReviewsSoFar` updates.

    Our own rather than the library's `TextIteratorStreamer`, which refuses batches larger than one and holds text
    back until it sees a space (it is built for subword tokens). Here one token is one character, so each can be
    shown the moment it exists. A slow reader is not flooded: iterating skips to the newest update waiting.
    """

    _END = object()

    def __init__(self, tokenizer, prompt: str, batch_size: int):
        special = set(tokenizer.all_special_ids)
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # What each id adds to the text: decoding with skip_special_tokens, one id at a time.
        self._pieces = ["" if index in special else token for index, token in enumerate(tokens)]
        self._eos = tokenizer.eos_token_id
        self._texts = [prompt] * batch_size
        self._finished = [False] * batch_size
        self._updates: queue.Queue = queue.Queue()
        self._ended = False

    def put(self, value: torch.Tensor):
        if value.dim() == 2:
            return  # generate first hands over the prompt, [batch, length]; each step then gives [batch]
        for row, token in enumerate(value.tolist()):
            if self._finished[row]:
                continue
            if token == self._eos:
                self._finished[row] = True
            else:
                self._texts[row] += self._pieces[token]
        self._updates.put(ReviewsSoFar(tuple(self._texts), tuple(self._finished)))

    def end(self):
        if self._ended:
            return
        self._ended = True
        self._updates.put(ReviewsSoFar(tuple(self._texts), (True,) * len(self._texts)))
        self._updates.put(self._END)

    def __iter__(self) -> Iterator[ReviewsSoFar]:
        while (update := self._updates.get()) is not self._END:
            while True:
                try:
                    newer = self._updates.get_nowait()
                except queue.Empty:
                    break
                if newer is self._END:
                    yield update
                    return
                update = newer
            yield update


class StopWhenSet(StoppingCriteria):
    """Ends every row at the next character once any of the events is set (a stop button, a closed stream)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        stop = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class SeededSampling(LogitsProcessor):
    """
    Filters the scores through `filters` (the library's own processors, in order), draws the next character from
    the result with a random generator of its own, and leaves that character the only possible one.

    Why not `generate(do_sample=True)` after `torch.manual_seed`: that draws from torch's global random state,
    which all threads share, so two people generating at once in the Space would change each other's seeded
    results. `generate` runs greedily over the distribution this processor has collapsed, so a seed gives the same
    reviews however many other requests are running.

    Why the filters run in here rather than as processors of their own: `generate`'s list of processors inspects
    every processor's signature on every step (`inspect.signature`), which cost more per character than the int8
    model's whole step when the Space used four of them.
    """

    def __init__(self, seed: int, filters: list[LogitsProcessor] = ()):
        self.generator = torch.Generator().manual_seed(seed)
        self.filters = list(filters)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for processor in self.filters:
            scores = processor(input_ids, scores)
        probabilities = scores.float().softmax(dim=-1).cpu()
        choice = torch.multinomial(probabilities, 1, generator=self.generator).to(scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


@dataclass
class ReviewGenerator:
    """A causal LM and its tokenizer, and where they came from (shown in the Space and in errors)."""

    model: torch.nn.Module
    tokenizer: object
    source: str

    @property
    def conditioned_on_stars(self) -> bool:
        return bool(getattr(self.model.config, "conditioned_on_stars", False))

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of `text` the model has no token for; they are fed to it as `<unk>`."""
        vocab = self.tokenizer.get_vocab()
        return sorted({char for char in text if char not in vocab})

    def prompt_ids(self, settings: GenerationSettings) -> torch.LongTensor:
        """
        `<bos>`, then the star token when stars are asked for, then one id per character of the prompt (mapped one
        by one, so a literal "<5star>" typed into the prompt stays seven characters): [1, length].
        """
        if settings.stars is not None and not self.conditioned_on_stars:
            raise ValueError(
                f"the model {self.source} was not trained with star ratings (conditioned_on_stars is false), "
                "so it cannot be asked for a number of stars: leave stars unset"
            )
        prompt = settings.prompt
        if prompt and len(self.unknown_characters(prompt)) == len(set(prompt)):
            raise ValueError("the prompt has no character the model knows: write it in the model's alphabet")
        ids = [self.tokenizer.bos_token_id]
        if settings.stars is not None:
            ids.append(self.tokenizer.convert_tokens_to_ids(star_token(settings.stars)))
        ids += self.tokenizer.convert_tokens_to_ids(list(prompt))
        return torch.tensor([ids], dtype=torch.long, device=self.model.device)

    def generate(self, settings: GenerationSettings, stop: threading.Event | None = None) -> list[str]:
        """The finished reviews, prompt included. Settings must have been through `check_settings`."""
        input_ids = self.prompt_ids(settings)
        output = self._run(input_ids, settings, stop or threading.Event())
        endings = self.tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        return [settings.prompt + ending for ending in endings]

    def stream(self, settings: GenerationSettings, stop: threading.Event | None = None) -> Iterator[ReviewsSoFar]:
        """
        Yields the reviews as they grow, one character at a time when the reader keeps up; the last update has every
        review finished and equals what `generate` returns. Generation runs in a thread; it stops early when `stop`
        is set or when the reader closes this iterator (a cancelled request in the Space).
        """
        input_ids = self.prompt_ids(settings)  # a bad prompt fails here, in the reader's thread
        streamer = BatchCharacterStreamer(self.tokenizer, settings.prompt, settings.num_reviews)
        closed = threading.Event()
        failure: list[BaseException] = []

        def work():
            try:
                self._run(input_ids, settings, stop or threading.Event(), closed, streamer=streamer)
            except BaseException as error:  # handed to the reader, who raises it in its own thread
                failure.append(error)
            finally:
                streamer.end()

        thread = threading.Thread(target=work, name="charlstm-generate", daemon=True)
        thread.start()
        try:
            yield from streamer
            thread.join()
            if failure:
                raise failure[0]
        finally:
            closed.set()
            thread.join()

    @torch.no_grad()
    def _run(
        self, input_ids: torch.LongTensor, settings: GenerationSettings, *stops: threading.Event, streamer=None
    ) -> torch.LongTensor:
        if settings.seed is None:
            raise ValueError("settings have no seed: pass them through check_settings first")
        input_ids = input_ids.expand(settings.num_reviews, -1)
        # A review is characters and then <eos>: never <pad>, <bos>, <unk> or a star token in the middle.
        suppressed = [index for index in self.tokenizer.all_special_ids if index != self.tokenizer.eos_token_id]
        filters = [SuppressTokensLogitsProcessor(suppressed, device=str(input_ids.device))]
        if settings.temperature != 1.0:
            filters.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            filters.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            filters.append(TopPLogitsWarper(settings.top_p))
        model_config = self.model.generation_config
        # A fresh config: the settings alone decide how to sample, whatever defaults the saved model carries.
        generation_config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            # Neutral on purpose: `SeededSampling` samples. Left unset, generate would fill these from the saved
            # model's sampling defaults and warn that they do nothing without do_sample.
            temperature=1.0,
            top_p=1.0,
            bos_token_id=model_config.bos_token_id,
            eos_token_id=model_config.eos_token_id,
            pad_token_id=model_config.pad_token_id,
        )
        return self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([SeededSampling(settings.seed, filters)]),
            stopping_criteria=StoppingCriteriaList([StopWhenSet(*stops)]),
            streamer=streamer,
        )


def model_or_bundled(model: str | os.PathLike | None, bundled: Path, made_by: str, option: str) -> str:
    """
    `model` as `require_model_source` gives it, or with None the bundled model at `bundled`; a missing bundled model
    is a FileNotFoundError that says which command makes it and which option names another.
    """
    if model is None:
        if not (bundled / "config.json").is_file():
            raise FileNotFoundError(
                f"the bundled {bundled.name} is missing: {bundled} has no config.json. It is made by `{made_by}` "
                f"(see the README); or pass a model directory or Hub id with {option}"
            )
        model = bundled
    return require_model_source(model)


def require_model_source(model: str | os.PathLike) -> str:
    """
    `model` as a string, after refusing a local path that does not exist (a FileNotFoundError naming it) rather
    than letting it be looked up on the Hub. Anything else that is not a directory is taken for a Hub id.
    """
    source = str(model)
    looks_local = isinstance(model, Path) or os.path.isabs(source) or source.startswith(".") or os.path.exists(source)
    if looks_local and not os.path.isdir(source):
        raise FileNotFoundError(f"model directory {source} does not exist: give a saved model directory or a Hub id")
    return source


def load_generator(model: str | os.PathLike | None = None, int8: bool = True) -> ReviewGenerator:
    """
    Loads a causal LM and its tokenizer through the Auto classes from a local directory or a Hub id; None means the
    bundled model. A missing directory or an unreachable Hub id is a FileNotFoundError that says what to do.
    `int8` quantizes the LSTM and linear weights for CPU inference (`charlstm.quantize`), several times faster at
    batch 1; where int8 cannot run, the model stays fp32 with a warning.
    """
    source = model_or_bundled(model, BUNDLED_MODEL, "charlstm train", "--model / MODEL_ID")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # float32 whatever the stored dtype: half-precision LSTM steps on a CPU are slow or unsupported.
        causal_lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"could not load the model {source}: {first_line}") from error
    if int8:
        causal_lm = quantize(causal_lm, inplace=True)
    return ReviewGenerator(causal_lm, tokenizer, source)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write reviews with a trained model (the bundled Yelp model by default)",
        description="Write reviews with a trained model. Uses the bundled Yelp model unless --model is given.",
    )
    defaults = GenerationSettings()
    parser.add_argument("prompt", nargs="?", default="", help="the start of the review (default: start from nothing)")
    parser.add_argument("--model", help="saved model directory or Hub id (default: the bundled model)")
    parser.add_argument("--stars", type=int, help="star rating to ask for, 1-5 (star-conditioned models only)")
    parser.add_argument("--num", type=int, default=defaults.num_reviews, help="reviews to write (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="default: %(default)s")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = off (default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="1.0 = off (default: %(default)s)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=defaults.max_new_tokens,
        help="characters to add at most (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="the same seed gives the same reviews (default: random, printed)")
    parser.add_argument("--stream", action="store_true", help="print characters as they are generated")
    parser.add_argument(
        "--fp32", action="store_true", help="keep fp32 weights (default: int8 weights, faster on a CPU)"
    )
    parser.set_defaults(func=run_generate_command)


def run_generate_command(args) -> int:
    settings = check_settings(
        GenerationSettings(
            prompt=args.prompt,
            stars=args.stars,
            num_reviews=args.num,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
    )
    generator = load_generator(args.model, int8=not args.fp32)
    generator.prompt_ids(settings)  # reports a bad prompt or stars before anything is printed
    unknown = generator.unknown_characters(settings.prompt)
    if unknown:
        note = f"the model does not know {''.join(unknown)!r}; they are read as <unk>"
        print(f"charlstm generate: note: {note}", file=sys.stderr)
    if args.seed is None:
        print(f"charlstm generate: seed {settings.seed}", file=sys.stderr)
    if args.stream:
        _print_stream(generator.stream(settings), settings.num_reviews)
    else:
        reviews = generator.generate(settings)
        print(REVIEW_SEPARATOR.join(reviews))
    return 0


# Between reviews on the terminal: a review may contain blank lines of its own.
REVIEW_SEPARATOR = "\n" + "-" * 40 + "\n"


def _print_stream(updates: Iterator[ReviewsSoFar], num_reviews: int) -> None:
    """
    Follows one review at a time: the reviews grow side by side, so when one ends, the next is printed as far as it
    has got and then followed live. The terminal shows the same text the non-streaming command prints.
    """
    current, shown = 0, 0
    for update in updates:
        while current < num_reviews:
            text = update.texts[current]
            sys.stdout.write(text[shown:])
            shown = len(text)
            if not update.finished[current]:
                break
            current, shown = current + 1, 0
            if current < num_reviews:
                sys.stdout.write(REVIEW_SEPARATOR)
        sys.stdout.flush()
    sys.stdout.write("\n")

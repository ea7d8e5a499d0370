"""The charlstm Space: write Yelp-style reviews with the character LSTM, streamed, and score a review for signs of
having been machine-written.

All the work is done by the `charlstm` package; this file only lays out the page and turns bad input into messages.
The generator comes from MODEL_ID (a Hub id or local directory; default: the bundled model) and the detector from
DETECTOR_ID (default: the bundled detector). `python space/app.py` (or `charlstm space`) serves on 127.0.0.1:7860
(`--port`, or PORT=).
"""

import argparse
import socket
import sys
import threading
import time
from contextlib import contextmanager

import gradio as gr

from charlstm.cli.space import add_space_options
from charlstm.detection.detector import Detection, Detector
from charlstm.detection.scoring import score_text
from charlstm.errors import UsageError
from charlstm.generation.sampling import ReviewGenerator, load_generator
from charlstm.generation.settings import GenerationSettings, Limits, check_settings
from charlstm.generation.streaming import REVIEW_SEPARATOR
from charlstm.loading import BUNDLED_DETECTOR, display_name

# Tighter than the command line's: one Space is shared by everyone who opens it.
SPACE_LIMITS = Limits(max_prompt_chars=500, max_new_tokens=1000, max_num_reviews=4, max_temperature=2.0,
                      max_guidance=8.0)
MAX_SCORE_CHARS = 4000
# How many requests of each kind run at once (the rest wait in the queue), and how many may wait.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 64
# The library reports every character; the page is repainted at most this often, which still looks continuous.
REPAINT_SECONDS = 0.05
STAR_CHOICES = [("any", 0)] + [(f"{stars} ★", stars) for stars in range(1, 6)]
RANK_COLOURS = {"top1": "#4caf50", "top3": "#ffeb3b", "top10": "#ff9800", "beyond": "#f44336"}
# Gradio lays highlighted spans out as separate boxes with gaps, which splits words when every character is
# coloured; this lets the coloured runs flow as plain text. The blank text nodes Gradio leaves between and inside
# the spans are hidden: font-size 0 around the spans, and inline-flex (which drops them) inside.
RANKS_CSS = """
#ranks .textfield { display: block; font-size: 0; line-height: 1.9; }
#ranks .textfield .token { display: inline; font-size: var(--text-lg); margin: 0; padding: 0; border-radius: 0; }
#ranks .textfield .token .text { display: inline; white-space: pre-wrap; }
"""
EXAMPLES = [
    ["The tacos here are", 5],
    ["We waited forty minutes and", 1],
    ["Decent place for a quick lunch,", 3],
    ["I have been coming here for years", 4],
]


def percent(probability: float) -> str:
    """A probability to one decimal, except that one short of certain never reads as 100% (nor above 0 as 0%)."""
    text = f"{probability:.1%}"
    if text == "100.0%" and probability < 1.0:
        return "above 99.9%"
    if text == "0.0%" and probability > 0.0:
        return "below 0.1%"
    return text


def rejected(message: str) -> gr.Error:
    """The error a user sees for a request the app turns down; the server log gets one line for it, no traceback."""
    print(f"space/app.py: rejected a request: {message}", file=sys.stderr, flush=True)
    return gr.Error(message, print_exception=False)


class OptionalDetector:
    """
    The library's `Detector`, or the reason it could not be loaded: the Score tab then says so in a plain sentence
    and goes on. The reason itself (which may name paths on this machine) goes to the server log only.
    """

    def __init__(self, source: str):
        self.detector = None
        self.problem = None
        try:
            self.detector = Detector(source)
        except (OSError, ValueError, RuntimeError) as error:  # the Space keeps serving the generator
            self.problem = f"the detector {display_name(source)} could not be loaded"
            print(f"space/app.py: the Score tab runs without the detector: {_one_line(error)}", file=sys.stderr)

    def detect(self, text: str) -> Detection | None:
        return None if self.detector is None else self.detector.predict([text])[0]

    def caveat(self) -> str:
        return "" if self.detector is None else self.detector.caveat()


class StopSignals:
    """
    One stop event per browser session: the Stop button sets it and that session's generation ends at the next
    character, then shows what it wrote. Cancelling the Gradio event instead is not enough: Gradio can only close a
    stream between two of its updates, and a stream busy writing rarely leaves it the moment.
    """

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, session: str):
        event = threading.Event()
        with self._lock:
            self._events[session] = event
        try:
            yield event
        finally:
            with self._lock:
                if self._events.get(session) is event:
                    del self._events[session]

    def stop(self, session: str) -> None:
        with self._lock:
            event = self._events.get(session)
        if event is not None:
            event.set()


def _done(cut) -> str:
    """The status of finished reviews: says which the length limit ended, not the model."""
    if not any(cut):
        return "done."
    which = ", ".join(str(index + 1) for index, was_cut in enumerate(cut) if was_cut)
    return f"done. Review {which} of {len(cut)} cut for length: raise Max new characters for whole reviews."


class ReviewSpace:
    """The page and its handlers. Handlers are methods so Gradio sees their signatures (and the gr.Request)."""

    def __init__(self, generator: ReviewGenerator, detector: OptionalDetector):
        self.generator = generator
        self.detector = detector
        self.stops = StopSignals()

    def generate(
        self, prompt, stars, temperature, top_k, top_p, max_new_characters, num_reviews, seed,
        guidance=GenerationSettings.guidance, request: gr.Request = None,
    ):
        """Streams (reviews as one text, {"reviews", "seed", "finished"}, status line) as the reviews grow."""
        try:
            settings = check_settings(
                GenerationSettings(
                    prompt=prompt,
                    stars=stars or None,
                    num_reviews=num_reviews,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    max_new_tokens=max_new_characters,
                    guidance=guidance,
                    seed=seed or None,  # 0 or empty: a random seed, shown with the result
                ),
                SPACE_LIMITS,
            )
            self.generator.prompt_ids(settings)
        except ValueError as error:
            raise rejected(str(error)) from None
        unknown = self.generator.unknown_characters(prompt)
        if unknown:
            gr.Warning(f"The model does not know {''.join(unknown)!r}; it reads them as unknown characters.")
        last_paint = 0.0
        with self.stops.running(request.session_hash) as stop:
            for update in self.generator.stream(settings, stop):
                done = all(update.finished)
                if done or time.monotonic() - last_paint >= REPAINT_SECONDS:
                    last_paint = time.monotonic()
                    state = ("stopped." if stop.is_set() else _done(update.cut)) if done else "writing…"
                    details = {"reviews": list(update.texts), "seed": settings.seed, "finished": done,
                               "cut": list(update.cut)}
                    yield REVIEW_SEPARATOR.join(update.texts), details, f"Seed {settings.seed} — {state}"

    def stop(self, request: gr.Request):
        self.stops.stop(request.session_hash)

    def score(self, text, stars):
        """(detector's label probabilities, characters coloured by rank, summary, details with per-character ranks)."""
        if not isinstance(text, str) or not text.strip():
            raise rejected("Paste a review to score.")
        if len(text) > MAX_SCORE_CHARS:
            raise rejected(f"The text is {len(text)} characters long; the limit is {MAX_SCORE_CHARS}.")
        try:
            scores = score_text(self.generator.model, self.generator.tokenizer, text, stars=stars or None)
        except ValueError as error:
            raise rejected(str(error)) from None
        detection = self.detector.detect(text)
        p_machine = None if detection is None else detection.machine_probability
        label = None if detection is None else detection.verdict  # the same words as `charlstm detect`
        if detection is None:
            detector_line = (f"The detector is not available ({self.detector.problem}); "
                             "the generator's view below still works.")
        elif p_machine is None:
            detector_line = f"Detector: **{detection.verdict}**: {detection.reason}."
        else:
            detector_line = f"Detector: **{detection.verdict}** (probability machine-written: {percent(p_machine)})."
        if detection is not None:
            detector_line += f"\n\n_{self.detector.caveat()}_"
        summary = (
            f"{detector_line}\n\nGenerator's view: **{scores.bits_per_character:.2f} bits per character**, "
            f"**{scores.top1_share:.0%}** of characters were its top choice. Machine-written text at a low "
            "temperature is mostly green; human text has more yellow, orange and red."
        )
        details = {
            "p_machine": p_machine,
            "uncertain": None if detection is None else detection.uncertain,
            "verdict": None if detection is None else detection.verdict,
            "detector_available": detection is not None,
            "bits_per_character": scores.bits_per_character,
            "top1_share": scores.top1_share,
            "characters": scores.characters,
            "ranks": scores.ranks,
        }
        return label, list(zip(scores.characters, scores.rank_buckets())), summary, details

    def build(self) -> gr.Blocks:
        limits = SPACE_LIMITS
        conditioned = self.generator.conditioned_on_stars
        with gr.Blocks(title="charlstm: review generator and detector", analytics_enabled=False) as demo:
            gr.Markdown(
                "# charlstm\nA character-level LSTM trained on Yelp reviews writes reviews one character at a time, "
                "and a detector scores how machine-written a review looks. "
                f"Generator: `{display_name(self.generator.source)}`. "
                "Fake reviews mislead people: use this to study and detect them, not to post them."
            )
            with gr.Tab("Generate"):
                with gr.Row():
                    with gr.Column():
                        prompt = gr.Textbox(
                            label="Start of the review", placeholder="The tacos here are", lines=2,
                            max_length=limits.max_prompt_chars, elem_id="prompt",
                        )
                        stars = gr.Radio(
                            STAR_CHOICES, value=0, label="Star rating", interactive=conditioned,
                            info=None if conditioned else "This model was not trained with ratings.",
                        )
                        with gr.Row():
                            temperature = gr.Slider(
                                0.05, limits.max_temperature, value=0.8, step=0.05, label="Temperature"
                            )
                            top_k = gr.Slider(0, 50, value=0, step=1, label="Top-k (0 = off)")
                            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1 = off)")
                        with gr.Row():
                            max_new = gr.Slider(
                                10, limits.max_new_tokens, value=300, step=10, label="Max new characters"
                            )
                            num_reviews = gr.Slider(
                                1, limits.max_num_reviews, value=1, step=1, label="Number of reviews"
                            )
                            seed = gr.Number(label="Seed (0 = random)", precision=0, minimum=0, value=0)
                            guidance = gr.Slider(
                                1.0, limits.max_guidance, value=GenerationSettings.guidance, step=0.5,
                                label="Keep to the rating (1 = as learned)", interactive=conditioned,
                            )
                        with gr.Row():
                            generate_button = gr.Button("Generate", variant="primary")
                            stop_button = gr.Button("Stop", variant="stop")
                    with gr.Column():
                        reviews = gr.Textbox(
                            label="Reviews", lines=14, max_lines=30, autoscroll=True, buttons=["copy"],
                            elem_id="reviews",
                        )
                        status = gr.Markdown(label="Status", elem_id="status")
                        with gr.Accordion("Details", open=False):
                            details = gr.JSON(label="Reviews and seed")
                gr.Examples(EXAMPLES, inputs=[prompt, stars], cache_examples=False)
                generate_button.click(
                    self.generate,
                    inputs=[prompt, stars, temperature, top_k, top_p, max_new, num_reviews, seed, guidance],
                    outputs=[reviews, details, status],
                    api_name="generate",
                    # The handler gets the values as sent and `check_settings` judges them, as for the command line.
                    # Gradio's own range checks would print a traceback to the server log for every refusal.
                    preprocess=False,
                )
                # Outside the queue, so a full queue cannot hold up a Stop.
                stop_button.click(self.stop, queue=False, api_visibility="private")
            with gr.Tab("Score"):
                with gr.Row():
                    with gr.Column():
                        text = gr.Textbox(
                            label="Review to score", lines=8, max_length=MAX_SCORE_CHARS, elem_id="score-text"
                        )
                        score_stars = gr.Radio(
                            STAR_CHOICES, value=0, label="Score it as a review with this rating",
                            interactive=conditioned,
                        )
                        score_button = gr.Button("Score", variant="primary")
                    with gr.Column():
                        probability = gr.Label(label="Detector", num_top_classes=2)
                        summary = gr.Markdown(label="Summary")
                ranks = gr.HighlightedText(
                    label="Rank of every character under the generator (top 1 / top 3 / top 10 / beyond)",
                    color_map=RANK_COLOURS, combine_adjacent=True, show_legend=True, elem_id="ranks",
                )
                with gr.Accordion("Per-character ranks", open=False):
                    score_details = gr.JSON(label="Scores")
                score_button.click(
                    self.score,
                    inputs=[text, score_stars],
                    outputs=[probability, ranks, summary, score_details],
                    api_name="score",
                    preprocess=False,  # as for generate: the handler and the scorer check what is sent
                )
        return demo


def serve(args: argparse.Namespace) -> None:
    """
    Loads the models and serves the page until stopped (`args`: the options of `charlstm.cli.space`). A port in use
    or a generator that does not load is a UsageError, before or instead of a traceback.
    """
    check_port_free(args.host, args.port)
    generator = load_generator(args.model, int8=not args.fp32)
    detector = OptionalDetector(args.detector or str(BUNDLED_DETECTOR))
    demo = ReviewSpace(generator, detector).build()
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    try:
        demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, show_error=True, css=RANKS_CSS)
    except OSError as error:  # taken in the seconds the models took to load
        raise UsageError(_cannot_serve(args.host, args.port, error)) from None


def check_port_free(host: str, port: int) -> None:
    """Refuses a port another program holds now, before seconds of loading end in Gradio's traceback."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(_cannot_serve(host, port, error)) from None


def _cannot_serve(host: str, port: int, error: OSError) -> str:
    return (f"cannot serve on {host}:{port} ({error.strerror or _one_line(error)}): choose another port with --port "
            "or PORT=")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_space_options(parser)
    args = parser.parse_args(argv)
    try:
        serve(args)
    except UsageError as error:  # one line, as the command line gives it
        parser.exit(2, f"space/app.py: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130)


def _one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


if __name__ == "__main__":
    main()

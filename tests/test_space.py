"""The Space, launched as `python space/app.py` on 127.0.0.1 and driven by `gradio_client` and a real browser."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import gradio
import pytest
import tomllib
from gradio_client import Client
from huggingface_hub import SpaceCard

from charlstm import CharLSTMConfig, CharLSTMForSequenceClassification
from charlstm.detection.decision import record_decision
from charlstm.detection.detector import Detector
from charlstm.generation.sampling import load_generator, most_new_characters
from charlstm.generation.settings import GenerationSettings, check_settings
from charlstm.generation.streaming import REVIEW_SEPARATOR

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TOP1_GREEN = "rgba(76, 175, 80, 0.5)"  # RANK_COLOURS["top1"] of space/app.py, as the page draws it
GENERATE_DEFAULTS = dict(stars=5, temperature=0.8, top_k=0, top_p=1.0, max_new_characters=60, num_reviews=2, seed=3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny, untrained detector: labels human/machine, like the real one."""
    config = CharLSTMConfig(
        vocab_size=len(tiny_tokenizer), embedding_dim=16, hidden_sizes=[24],
        id2label={0: "human", 1: "machine"}, label2id={"human": 0, "machine": 1},
    )
    path = tmp_path_factory.mktemp("detector")
    CharLSTMForSequenceClassification(config).eval().save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    # What eval_detector.py --record records: an untrained detector is unsure of everything.
    tested_on = [{"name": "gpt-3 yelp (machine text by gpt-3)", "roc_auc": 0.91, "unseen_roc_auc": 0.62,
                  "false_positive_rate": 0.2, "human": 10, "machine": 10},
                 {"name": "gpt-2 amazon (machine text by gpt-2)", "roc_auc": 0.95, "unseen_roc_auc": 0.7,
                  "false_positive_rate": 0.2, "human": 10, "machine": 10}]
    record_decision(path, tested_on=tuple(tested_on), uncertain_band=(0.0, 1.0))
    return path


def launch_space(model_dir, detector: str | None, log_path: Path, python: str = sys.executable,
                 app: Path = ROOT / "space" / "app.py", cwd: Path = ROOT, env: dict | None = None):
    """
    Starts `python space/app.py` (or another copy of the app, with another Python) on a free loopback port; returns
    the process and its URL once it answers. A model or detector of None leaves the app to its default.
    """
    port = free_port()
    env = {
        **(os.environ if env is None else env),  # conftest's Hub isolation: HF_ENDPOINT, proxies, HF_HOME all local
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name in ("MODEL_ID", "DETECTOR_ID", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT"):
        env.pop(name, None)
    if model_dir is not None:
        env["MODEL_ID"] = str(model_dir)
    if detector is not None:
        env["DETECTOR_ID"] = str(detector)
    log = open(log_path, "w")
    process = subprocess.Popen(
        [python, str(app), "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to loopback, never a proxy
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Space exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            opener.open(url + "config", timeout=2).read()
            return process, url
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the Space did not answer within 120 s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def space(star_model_dir, detector_dir, tmp_path_factory):
    process, url = launch_space(star_model_dir, str(detector_dir), tmp_path_factory.mktemp("space") / "app.log")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(space):
    connected = Client(space, verbose=False, analytics_enabled=False)
    yield connected
    connected.close()


def generate(client, prompt="The tacos", **changes):
    values = {**GENERATE_DEFAULTS, **changes}
    return client.predict(prompt, *values.values(), api_name="/generate")


def test_generate_returns_the_reviews_the_library_writes_for_that_seed(client, star_model_dir):
    text, details, status = generate(client, seed=3)
    expected = load_generator(star_model_dir).generate(
        check_settings(GenerationSettings(prompt="The tacos", stars=5, num_reviews=2, max_new_tokens=60, seed=3))
    )
    # This test model never writes <eos>: both reviews end for length, and the status says so.
    assert details == {"reviews": expected, "seed": 3, "finished": True, "cut": [True, True]}
    assert all(review in text for review in expected)
    assert "Seed 3" in status and "Review 1, 2 of 2 cut for length" in status


def test_seed_0_picks_a_random_seed_and_reports_it(client):
    _, details, status = generate(client, seed=0)
    assert details["seed"] != 0
    again = generate(client, seed=details["seed"])[1]
    assert f"Seed {details['seed']}" in status
    assert again["reviews"] == details["reviews"]


def test_generate_streams_updates_before_the_end(client):
    long_run = {**GENERATE_DEFAULTS, "max_new_characters": 1000, "num_reviews": 4}
    job = client.submit("The tacos", *long_run.values(), api_name="/generate")
    arrivals = []
    for update in job:
        arrivals.append((len(update[1]["reviews"][0]), update[1]["finished"]))
    lengths = [length for length, _ in arrivals]
    assert [finished for _, finished in arrivals] == [False] * (len(arrivals) - 1) + [True]
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths)  # partial reviews that grew, then the whole ones
    # A review runs on past the length asked for to a sentence or word end, within a bound.
    assert len("The tacos") + 1000 <= lengths[-1] <= len("The tacos") + most_new_characters(1000)


def test_score_returns_the_detector_probability_and_a_rank_for_every_character(client, detector_dir):
    text = "The tacos were great and the salsa was fresh."
    label, highlighted, summary, details = client.predict(text, 0, api_name="/score")
    assert details["p_machine"] == pytest.approx(Detector(detector_dir).predict([text])[0].machine_probability)
    assert label["label"] == details["verdict"] == Detector(detector_dir).predict([text])[0].verdict
    assert details["characters"] == list(text)
    assert len(details["ranks"]) == len(text) and all(rank >= 1 for rank in details["ranks"])
    assert "".join(span["token"] for span in highlighted) == text
    expected = ["top1" if r == 1 else "top3" if r <= 3 else "top10" if r <= 10 else "beyond" for r in details["ranks"]]
    assert [span["class_or_confidence"] for span in highlighted for _ in span["token"]] == expected  # joined runs
    assert f"{details['bits_per_character']:.2f} bits per character" in summary


def test_score_says_what_the_detector_was_tested_on_and_when_it_is_unsure(client):
    text = "The tacos were great and the salsa was fresh."
    label, highlighted, summary, details = client.predict(text, 0, api_name="/score")
    assert details["uncertain"] is True and "Detector: **uncertain, leaning" in summary
    assert "gpt-3 yelp (machine text by gpt-3) AUC 0.91" in summary
    assert "as on a generator it never saw: AUC 0.62-0.70." in summary
    assert "wrongly called 20% of the real ones machine-written" in summary


def test_score_says_it_cannot_judge_a_short_or_foreign_text(client):
    for text, reason in (("Great tacos.", "12 characters long"), ("美味しいラーメンでした。" * 5, "does not know")):
        label, highlighted, summary, details = client.predict(text, 0, api_name="/score")
        assert label["label"] == details["verdict"] == "cannot judge" and details["p_machine"] is None
        assert reason in summary


@pytest.mark.parametrize(
    "prompt, changes, message",
    [
        ("x" * 501, {}, "prompt is 501 characters long; the limit is 500"),
        ("Hi", {"max_new_characters": 5000}, "max_new_tokens must be from 1 to 1000, got 5000"),
        ("Hi", {"num_reviews": 9}, "number of reviews must be from 1 to 4, got 9"),
        ("Hi", {"temperature": 0}, "temperature must be above 0 and at most 2.0, got 0.0"),
        ("Hi", {"stars": 7}, "7"),
        ("日本語", {}, "the prompt has no character the model knows"),
    ],
)
def test_bad_generate_inputs_get_their_messages(client, prompt, changes, message):
    with pytest.raises(Exception, match=message):
        generate(client, prompt, **changes)


@pytest.mark.parametrize(
    "text, message", [("", "Paste a review to score"), ("x" * 4001, "4001 characters long; the limit is 4000")]
)
def test_bad_score_inputs_get_their_messages(client, text, message):
    with pytest.raises(Exception, match=message):
        client.predict(text, 0, api_name="/score")


def test_without_a_detector_the_score_tab_still_shows_the_generators_view(star_model_dir, tmp_path):
    missing = tmp_path / "no-detector"
    process, url = launch_space(star_model_dir, str(missing), tmp_path / "app.log")
    try:
        no_detector = Client(url, verbose=False, analytics_enabled=False)
        label, highlighted, summary, details = no_detector.predict("Great tacos.", 0, api_name="/score")
        no_detector.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert details["p_machine"] is None and details["detector_available"] is False
    assert "detector is not available" in summary and str(missing) in summary
    assert len(details["ranks"]) == len("Great tacos.")


@pytest.mark.slow
def test_sixteen_clients_times_five_requests_all_complete(space, tmp_path):
    report = tmp_path / "load.json"
    result = subprocess.run(
        [sys.executable, "scripts/load_space.py", "--url", space, "--clients", "16", "--requests", "5",
         "--max-new-characters", "100", "--stars", "5", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    figures = json.loads(report.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert (figures["requests"], figures["completed"], figures["errors"]) == (80, 80, 0)
    print(result.stdout)


def test_space_card_has_the_metadata_a_gradio_space_needs():
    card = SpaceCard.load(ROOT / "space" / "README.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__
    assert (ROOT / "space" / card.data.app_file).is_file()
    assert card.data.models and 0 < len(card.data.short_description) <= 60  # the Hub's limit
    assert 'api_name="/generate"' in card.text and 'api_name="/score"' in card.text


def test_space_requirements_are_the_package_dependencies():
    with open(ROOT / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    lines = (ROOT / "space" / "requirements.txt").read_text().splitlines()
    assert sorted(line for line in lines if line and not line.startswith(("#", "-"))) == sorted(dependencies)


# --- a real browser


@pytest.fixture
def page(space, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`)")
    blocked = []

    def loopback_only(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-proxy-server"])
        tab = browser.new_page(viewport={"width": 1280, "height": 1000})
        tab.route("**/*", loopback_only)
        tab.goto(space)
        yield tab
        tab.screenshot(path=str(tmp_path / "space.png"), full_page=True)
        browser.close()
    assert not blocked, f"the page tried to reach other hosts: {blocked[:5]}"


def reviews_text(page) -> str:
    return page.locator("#reviews textarea").input_value()


@pytest.mark.slow
def test_browser_generates_streamed_text_and_scores_it(page, tmp_path, star_model_dir):
    page.locator("#prompt textarea").fill("The tacos")
    page.get_by_label("5 ★").first.check()
    page.get_by_label("number input for Max new characters").fill("1000")
    page.get_by_label("number input for Max new characters").press("Enter")
    page.get_by_role("button", name="Generate").click()

    lengths = []
    deadline = time.monotonic() + 60
    while "done." not in page.locator("#status").inner_text() and time.monotonic() < deadline:
        text = reviews_text(page)
        if text and (not lengths or len(text) != lengths[-1]):
            lengths.append(len(text))
        time.sleep(0.02)
    assert reviews_text(page).startswith("The tacos")
    assert len(lengths) >= 3 and lengths == sorted(lengths)  # it appeared and grew
    # The browser turns a "\r\n" the untrained model may write into one "\n".
    assert len(reviews_text(page)) > 900
    page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)

    page.get_by_role("tab", name="Score").click()
    # The model's own greedy text: nearly every character is its top choice, so green must show.
    greedy = check_settings(GenerationSettings(prompt="The", top_k=1, max_new_tokens=60, seed=1))
    review = load_generator(star_model_dir).generate(greedy)[0]
    page.locator("#score-text textarea").fill(review)
    page.get_by_role("button", name="Score").click()
    page.get_by_text("bits per character").wait_for(timeout=30_000)
    spans = page.locator("#ranks .token.highlighted")
    assert "".join(spans.locator(".text").all_inner_texts()) == review  # every character is in a coloured span
    colours = {span.evaluate("node => getComputedStyle(node).backgroundColor") for span in spans.all()}
    rank_colours = {TOP1_GREEN, "rgba(255, 235, 59, 0.5)", "rgba(255, 152, 0, 0.5)", "rgba(244, 67, 54, 0.5)"}
    assert colours <= rank_colours and TOP1_GREEN in colours
    assert page.get_by_text("machine-written").count() >= 1  # the detector's verdict
    page.screenshot(path=str(tmp_path / "score.png"), full_page=True)


@pytest.mark.slow
def test_browser_score_strip_breaks_lines_between_words_only(page):
    # The strip colours runs of characters; a line must never break inside a word ("dr|inks"), only at its spaces.
    review = " ".join(["The fresh drinks and crispy tacos were wonderful, friendly staff too."] * 12)
    page.get_by_role("tab", name="Score").click()
    page.locator("#score-text textarea").fill(review)
    page.get_by_role("button", name="Score").click()
    page.get_by_text("bits per character").wait_for(timeout=30_000)
    spans = page.locator("#ranks .token.highlighted")
    boxes = spans.evaluate_all(
        "nodes => nodes.map(node => { const rects = node.getClientRects();"
        " return [node.innerText, rects[0].top, rects[rects.length - 1].top]; })")
    tops = {round(first) for _, first, _ in boxes}
    assert len(tops) > 3  # the review runs over several lines
    for (text, _, last_top), (following, first_top, _) in zip(boxes, boxes[1:]):
        if text and following and not text[-1].isspace() and not following[0].isspace():  # one word across two runs
            assert round(last_top) == round(first_top), f"a line breaks inside a word: {text!r}|{following!r}"


@pytest.mark.slow
def test_browser_stop_button_ends_generation_early(page):
    page.locator("#prompt textarea").fill("Stop me")
    page.get_by_label("number input for Max new characters").fill("1000")
    page.get_by_label("number input for Max new characters").press("Enter")
    page.get_by_label("number input for Number of reviews").fill("4")
    page.get_by_label("number input for Number of reviews").press("Enter")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("writing…").wait_for(timeout=30_000)  # the reviews have started to appear
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("stopped.").wait_for(timeout=10_000)
    stopped = reviews_text(page)
    time.sleep(1.0)
    assert reviews_text(page) == stopped  # no longer growing
    first_review = stopped.split(REVIEW_SEPARATOR)[0]
    # Short of the hard bound a review that ran its course reaches (past 1000 it runs on to a word end at most).
    assert first_review.startswith("Stop me") and len(first_review) < len("Stop me") + most_new_characters(1000)

"""Shared fixtures: a tiny tokenizer and a tiny, untrained model saved as a Hub-style directory."""

# --- Hub isolation: set before anything imports huggingface_hub / transformers / datasets / gradio (they read
# these at import). Every Hub call in the suite, subprocesses included (they inherit the environment), goes to
# the Hub-protocol test server of tests/hubserver.py on 127.0.0.1; nothing can reach huggingface.co.
import atexit
import os
import shutil
import socket
import tempfile

# The suite runs tiny models, often in several processes at once (an app server and its clients, DDP workers):
# one torch thread each is faster for tiny models and keeps OpenMP from stalling on barriers when processes
# share the cores. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Tests that `from tests.conftest import ...` run this module a second time: keep the first run's port and home.
if "CHARLSTM_TEST_HUB_PORT" not in os.environ:
    os.environ["CHARLSTM_TEST_HUB_PORT"] = str(_free_loopback_port())
    os.environ["CHARLSTM_TEST_HF_HOME"] = tempfile.mkdtemp(prefix="charlstm-test-hf-home-")
    atexit.register(shutil.rmtree, os.environ["CHARLSTM_TEST_HF_HOME"], ignore_errors=True)
HUB_PORT = int(os.environ["CHARLSTM_TEST_HUB_PORT"])
HUB_TOKEN = "hf_hubserver_test_token"
_HF_HOME = os.environ["CHARLSTM_TEST_HF_HOME"]
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HUB_DISABLE_XET="1",  # else uploads go through Xet, which the test server does not speak
    HF_TOKEN=HUB_TOKEN,
    HF_HOME=_HF_HOME,
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_UPDATE_DOWNLOAD_COUNTS="0",  # datasets would HEAD s3.amazonaws.com on every load_dataset
    GRADIO_ANALYTICS_ENABLED="False",
    # datasets also asks http://datasets-server.<endpoint host> for exported infos (no switch for it), and other
    # libraries may phone home: route all proxied traffic to the test server, which refuses it loudly.
    HTTP_PROXY=f"http://127.0.0.1:{HUB_PORT}",
    HTTPS_PROXY=f"http://127.0.0.1:{HUB_PORT}",
    NO_PROXY="127.0.0.1,localhost,::1",
)
for _name in ("http_proxy", "https_proxy", "no_proxy"):
    os.environ[_name] = os.environ[_name.upper()]
for _name in ("ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(_name, None)
# --- end of Hub isolation: the imports below come after it on purpose (pyproject.toml lets E402 pass here)

import string

import pytest
import torch

from charlstm import CharLSTMConfig, CharLSTMForCausalLM, CharLSTMTokenizer

# Our own sentences, review-shaped; the real Yelp data is for benchmarks and the bundled model only.
TINY_CORPUS = [
    "The tacos were great and the salsa was fresh. Friendly staff, quick service!",
    "Cold fries, slow waiter. We waited forty minutes for a burger. Never again.",
    "Decent pizza for the price; the crust was thin and crispy.\nParking is hard.",
    "Best brunch in town: fluffy pancakes, strong coffee, and a view of the park.",
    "Meh. The soup was salty and the bread was stale, but the dessert was lovely.",
]
TINY_CHARACTERS = string.printable + "éèàü€😀"


@pytest.fixture(scope="session")
def tiny_tokenizer() -> CharLSTMTokenizer:
    return CharLSTMTokenizer.from_corpus(TINY_CORPUS, extra_characters=TINY_CHARACTERS)


def make_tiny_model(tokenizer: CharLSTMTokenizer, seed: int = 0, **config) -> CharLSTMForCausalLM:
    torch.manual_seed(seed)
    settings = dict(vocab_size=len(tokenizer), embedding_dim=16, hidden_sizes=[32, 24])
    return CharLSTMForCausalLM(CharLSTMConfig(**{**settings, **config})).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer) -> CharLSTMForCausalLM:
    return make_tiny_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A saved model directory as `save_pretrained` writes it: weights, tokenizer and the three code files."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hub_server():
    """The Hub-protocol server on HF_ENDPOINT: `.endpoint`, `.token`, `.publish(folder, repo_id, repo_type)`."""
    from hubserver import HubServer

    with HubServer(port=HUB_PORT, token=HUB_TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def star_model_dir(tmp_path_factory, tiny_tokenizer):
    """
    A saved tiny star-conditioned model that never ends a review (its `<eos>` logit is pushed far down), so every
    generation runs to `max_new_tokens`: for tests of lengths, streaming and stopping early.
    """
    model = make_tiny_model(tiny_tokenizer, seed=1, conditioned_on_stars=True)
    with torch.no_grad():
        model.lm_head.bias[tiny_tokenizer.eos_token_id] = -1e4
    path = tmp_path_factory.mktemp("star-model")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path

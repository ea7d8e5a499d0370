"""The package as a user gets it: a wheel built from the repository, installed in a fresh virtualenv, used offline
from a directory that has nothing of the checkout in it."""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client

from tests.test_space import launch_space

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# torch goes in first, as the Makefile installs it: an unpinned torch with none installed pulls a CUDA build.
TORCH = re.search(r"torch==[\w.]+", (ROOT / "Makefile").read_text()).group(0)
REVIEW = ("The service was friendly and the food came out hot. We shared the nachos and two plates of tacos, and we "
          "will be back.")  # long enough for the detector to judge


def run(command: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{output}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the virtualenv's bin folder, an empty working directory, the environment to run it in)."""
    base = tmp_path_factory.mktemp("install")
    # pip talks to the package registry: not through the suite's proxies, which lead to the local test Hub.
    pip_env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(base / "wheel")], base, pip_env)
    (wheel,) = (base / "wheel").glob("charlstm-*.whl")
    run([sys.executable, "-m", "venv", str(base / "venv")], base, pip_env)
    bin_dir = base / "venv" / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", TORCH], base, pip_env, timeout=1800)
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheel}[space]"], base, pip_env, timeout=1800)

    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False",
               PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    return bin_dir, elsewhere, env


def package_dir(installed) -> Path:
    bin_dir, elsewhere, env = installed
    where = run([str(bin_dir / "python"), "-c", "import charlstm; print(charlstm.__file__)"], elsewhere, env)
    path = Path(where.stdout.strip()).parent
    assert ROOT not in path.parents, f"the virtualenv imported the checkout: {path}"
    return path


def test_generate_writes_with_the_bundled_model(installed):
    bin_dir, elsewhere, env = installed
    result = run([str(bin_dir / "charlstm"), "generate", "The tacos", "--stars", "5", "--max-new-tokens", "40",
                  "--seed", "1"], elsewhere, env)
    review = result.stdout.rstrip("\n")
    assert review.startswith("The tacos") and len(review) > len("The tacos") + 5, review
    assert sum(char.isalpha() for char in review) > len(review) / 2, review


def test_detect_judges_with_the_bundled_detector(installed):
    bin_dir, elsewhere, env = installed
    result = run([str(bin_dir / "charlstm"), "detect", REVIEW, "--json"], elsewhere, env)
    (detection,) = json.loads(result.stdout)
    assert detection["label"] in ("human", "machine")
    assert 0.0 <= detection["machine_probability"] <= 1.0
    assert detection["characters_read"] == len(REVIEW) and not detection["truncated"]
    short = run([str(bin_dir / "charlstm"), "detect", "Great tacos.", "--json"], elsewhere, env)
    (detection,) = json.loads(short.stdout)
    assert detection["verdict"] == "cannot judge" and detection["machine_probability"] is None


def test_model_card_renders_the_installed_bundled_generator(installed):
    bin_dir, elsewhere, env = installed
    generator = package_dir(installed) / "bundled" / "charlstm-yelp"
    log = json.loads((generator / "training_log.json").read_text())
    card = run([str(bin_dir / "charlstm"), "model-card", str(generator)], elsewhere, env).stdout
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert f"{log['final']['eval_bpc']:.4f}" in card  # the run's own held-out figure, from the installed log
    assert "{{" not in card  # every placeholder of the template was filled


def test_push_help(installed):
    bin_dir, elsewhere, env = installed
    result = run([str(bin_dir / "charlstm"), "push", "--help"], elsewhere, env)
    assert result.stdout.startswith("usage: charlstm push") and "--repo-id" in result.stdout


def test_the_readme_snippet_runs(installed):
    bin_dir, elsewhere, env = installed
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"## Using the model\n+```python\n(.*?)```", readme, re.S).group(1)
    result = run([str(bin_dir / "python"), "-c", snippet], elsewhere, env)
    assert result.stdout.startswith("The tacos") and len(result.stdout.strip()) > len("The tacos"), result.stdout


def test_the_installed_space_serves_and_writes(installed, tmp_path):
    bin_dir, elsewhere, env = installed
    app = package_dir(installed) / "hub" / "space" / "app.py"
    process, url = launch_space(None, None, tmp_path / "app.log", python=str(bin_dir / "python"), app=app,
                                cwd=elsewhere, env=env)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to loopback
        page = opener.open(url + "config", timeout=30).read().decode()
        client = Client(url, verbose=False, analytics_enabled=False)
        text, details, _ = client.predict("The tacos here are", 5, 0.8, 0, 1.0, 30, 1, 42, api_name="/generate")
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "charlstm-yelp" in page  # the page names the generator it loaded: the bundled one
    assert text.startswith("The tacos here are") and details["seed"] == 42 and details["finished"]

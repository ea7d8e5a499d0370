"""Publishing to the Hugging Face Hub: a generator or a detector (`charlstm push`), the Space (`charlstm push-space`).

A pushed model repo works for people who never installed this package: it holds the safetensors weights, the
tokenizer, the three code files with `auto_map` (so `trust_remote_code=True` loads it), `generation_config.json`,
the training log and curves, a model card rendered from the run's own figures, and, for a generator, an Inference
Endpoints `handler.py`. Everything goes through `huggingface_hub`'s `HfApi`; the token comes from `HF_TOKEN` or the
`hf auth login` store and is only ever handed to it, never printed or written.
"""

import importlib.metadata
import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    SpaceCard,
    SpaceCardData,
    constants,
    get_token,
)
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from huggingface_hub.utils import logging as hub_logging

from ..errors import MissingFileError, UsageError
from ..loading import DETECTOR, kind_of, load_config, load_model
from ..runfiles import DETECTOR_LOG, TRAINING_CURVES, TRAINING_LOG
from .model_card import render_model_card

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Package data: links to the project's space/app.py, README.md and requirements.txt, which a build copies.
SPACE_DIR = Path(__file__).resolve().parent / "space"
HANDLER_SOURCE = Path(__file__).resolve().parent / "endpoint_handler.py"
CODE_FILES = ("configuration_charlstm.py", "modeling_charlstm.py", "tokenization_charlstm.py")
TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json")
# Published when present. Not published: checkpoints, optimizer and trainer state, training_args.bin (a pickle).
OPTIONAL_FILES = (
    "generation_config.json", "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json",
    TRAINING_LOG, TRAINING_CURVES, DETECTOR_LOG,
)
# What the endpoint handler and the model code need; the package's own pins are the single source of them.
ENDPOINT_REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
MODEL_CARD = "README.md"


@dataclass(frozen=True)
class PushResult:
    """url: the repo's page. commit: the head after the push. pinned_revision: the commit the model card tells
    people to load (the last one that changed weights, code or tokenizer), for `from_pretrained(revision=...)`."""

    url: str
    commit: str
    pinned_revision: str


def check_repo_id(repo_id: str, option: str = "--repo-id") -> str:
    """A Hub repo id must be NAMESPACE/NAME; a bare name would silently land in whichever account the token is."""
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise UsageError(f"{option} must look like NAMESPACE/NAME (e.g. alice/charlstm-yelp), got {repo_id!r}")
    return repo_id


def hub_token() -> str:
    """The token `huggingface_hub` would use (HF_TOKEN, then the saved login), or a UsageError saying how to get one."""
    if constants.HF_HUB_OFFLINE:
        raise UsageError("HF_HUB_OFFLINE is set: publishing needs the Hub; unset it to push")
    token = get_token()
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def check_push_target(repo_id: str) -> str:
    """Checks the repo id and that a token exists, before hours of training end in a push that cannot happen."""
    check_repo_id(repo_id, "--hub-model-id")
    return hub_token()


def model_files(model_dir: str | Path) -> list[Path]:
    """The files of `model_dir` that get published, after refusing a directory that would not load from the Hub."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MissingFileError(f"model directory {model_dir} does not exist")
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise MissingFileError(f"{model_dir} has no safetensors weights: save the model with save_pretrained")
    missing = [name for name in ("config.json", *TOKENIZER_FILES, *CODE_FILES) if not (model_dir / name).is_file()]
    if missing:
        raise MissingFileError(
            f"{model_dir} is missing {', '.join(missing)}: save the model and its tokenizer with save_pretrained "
            "after `import charlstm` (which copies the code files), or the repo would not load with trust_remote_code"
        )
    load_config(str(model_dir))  # valid JSON, a charlstm config
    if "auto_map" not in json.loads((model_dir / "config.json").read_text(encoding="utf-8")):
        raise MissingFileError(f"{model_dir}/config.json has no auto_map: re-save it after `import charlstm`")
    optional = [model_dir / name for name in OPTIONAL_FILES if (model_dir / name).is_file()]
    return weights + [model_dir / name for name in ("config.json", *TOKENIZER_FILES, *CODE_FILES)] + optional


def package_requirements(names: tuple[str, ...] | None = None) -> list[str]:
    """The package's install requirements (not its extras), all or those naming `names`, as pyproject pins them."""
    try:
        requirements = importlib.metadata.requires("charlstm") or []
    except importlib.metadata.PackageNotFoundError:
        raise UsageError("the charlstm package is not installed: `pip install -e .` in the project") from None
    chosen = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")
        if "extra ==" not in requirement and (names is None or name in names):
            chosen.append(requirement)
    return chosen


@contextmanager
def quiet_uploads():
    """
    No per-file upload bars and no retry notes: a failed upload leaves its bar open, the one-line error would follow
    it on the same line, and a dropped connection adds a dozen lines of retries before it. Our repos are a few MB.
    """
    were_disabled, verbosity = are_progress_bars_disabled(), hub_logging.get_verbosity()
    disable_progress_bars()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)
        if not were_disabled:
            enable_progress_bars()


@contextmanager
def hub_errors():
    """An error answer from the Hub, or no answer, becomes a one-line UsageError (exit 2) instead of a traceback."""
    try:
        yield
    except Exception as error:
        failure = underlying_hub_failure(error)
        if failure is None:
            raise
        if failure is error:
            raise UsageError(hub_failure(error)) from None
        raise UsageError(
            f"{_first_line(error).rstrip('.')}: {hub_failure(failure)}. Nothing was committed; run the same command "
            "again: it uploads only what is missing"
        ) from None


# What a Hub request can end in besides success: an error answer, no connection, a broken transfer.
HUB_FAILURES = (HfHubHTTPError, httpx2.TransportError, ConnectionError, TimeoutError)


def underlying_hub_failure(error: BaseException) -> BaseException | None:
    """`error` if it is a Hub failure, or the one behind it: huggingface_hub wraps a failed file upload in a
    RuntimeError ("Error while uploading ..."), whatever broke it. None when no Hub failure is behind it."""
    while error is not None and not isinstance(error, HUB_FAILURES):
        error = error.__cause__
    return error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def hub_failure(error: BaseException) -> str:
    """One sentence on what went wrong talking to the Hub."""
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "?"
        detail = error.server_message or str(error).strip().splitlines()[0]
        hint = ": check HF_TOKEN or run `hf auth login`" if status in (401, 403) else ""
        return f"the Hub refused the request ({status}): {detail.strip()}{hint}"
    detail = _first_line(error)
    return f"could not reach the Hub at {constants.ENDPOINT} ({detail}): check the network or HF_ENDPOINT"


def commit_folder(api: HfApi, folder: Path, repo_id: str, repo_type: str, revision: str | None, message: str,
                  keep: tuple[str, ...] = ()) -> str:
    """
    Makes the repo hold exactly the files of `folder` (plus `.gitattributes` and `keep`) in one commit; returns the
    head commit. Unchanged files are skipped by huggingface_hub, so pushing the same folder again commits nothing.
    Our own create_commit rather than `upload_folder(delete_patterns=...)`, which cannot spare the model card while
    deleting every other stale file.
    """
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    names = {path.relative_to(folder).as_posix() for path in files}
    remote = api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
    stale = [name for name in remote if name not in names and name not in (".gitattributes", *keep)]
    operations = [CommitOperationAdd(path.relative_to(folder).as_posix(), str(path)) for path in files]
    operations += [CommitOperationDelete(name) for name in stale]
    return api.create_commit(repo_id, operations, commit_message=message, repo_type=repo_type, revision=revision).oid


def last_commit_touching(api: HfApi, repo_id: str, paths: list[str], revision: str | None) -> str:
    """The newest commit that changed any of `paths`: at it, all of them are exactly as they are now."""
    changed = {info.last_commit.oid for info in api.get_paths_info(repo_id, paths, expand=True, revision=revision)}
    for commit in api.list_repo_commits(repo_id, revision=revision):
        if commit.commit_id in changed:
            return commit.commit_id
    raise UsageError(f"the Hub did not report the commits of {repo_id}")


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dataset_id: str | None = None,
    detector_id: str | None = None,
) -> PushResult:
    """
    Publishes a saved generator or detector to `repo_id` (created if needed; `revision`: a branch, created from
    main if needed). Two commits at most: the files, then the model card, which pins the commit of the files.
    This is what `charlstm push` and `charlstm train --push-to-hub` run.
    """
    check_repo_id(repo_id)
    token = hub_token()
    files = model_files(model_dir)
    # Everything that can be checked here is, before the first byte leaves: the weights load and match the
    # config, the card renders (its loading instructions get the commit id once the files are up).
    kind = kind_of(load_config(str(model_dir)))
    load_model(str(model_dir), kind)
    render_model_card(model_dir, repo_id, None, dataset_id=dataset_id, detector_id=detector_id)
    label = "detector" if kind == DETECTOR else "model"
    api = HfApi(token=token)
    with hub_errors(), quiet_uploads(), tempfile.TemporaryDirectory(prefix="charlstm-push-") as staging:
        staging = Path(staging)
        for path in files:
            shutil.copy2(path, staging / path.name)
        if kind != DETECTOR:
            shutil.copy2(HANDLER_SOURCE, staging / "handler.py")
            (staging / "requirements.txt").write_text("\n".join(package_requirements(ENDPOINT_REQUIREMENTS)) + "\n")
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        files_commit = commit_folder(api, staging, repo_id, "model", revision,
                                     commit_message or f"Upload charlstm {label}", keep=(MODEL_CARD,))
        try:
            pinned = last_commit_touching(api, repo_id, [path.name for path in files], revision)
            card = render_model_card(model_dir, repo_id, pinned, dataset_id=dataset_id, detector_id=detector_id)
            head = api.upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo=MODEL_CARD, repo_id=repo_id,
                                   revision=revision, commit_message=f"Model card for {pinned[:12]}").oid
        except Exception as error:
            failure = underlying_hub_failure(error)
            if failure is None and not isinstance(error, UsageError):
                raise
            reason = str(error) if failure is None else hub_failure(failure)
            raise UsageError(
                f"{repo_id} now holds the files of {model_dir} (commit {files_commit[:12]}) but not their model card: "
                f"{reason}. Run the same `charlstm push` again: it uploads only what is missing"
            ) from None
    return PushResult(str(url), head, pinned)


def push_space(
    repo_id: str,
    model_id: str,
    *,
    detector_id: str | None = None,
    private: bool = False,
    space_dir: str | Path | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """
    Publishes `space_dir` (default: the project's `space/`, as the package carries it) as a Gradio Space, with the
    charlstm package beside `app.py` so it imports, and sets the Space variables MODEL_ID / DETECTOR_ID (a Space's
    variables are its environment) to the models it should load. The README's metadata gets the Gradio SDK and
    links to the models.
    """
    check_repo_id(repo_id)
    check_repo_id(model_id, "--model-id")
    if detector_id is not None:
        check_repo_id(detector_id, "--detector-id")
    token = hub_token()
    space_dir = Path(space_dir) if space_dir is not None else SPACE_DIR
    if not (space_dir / "app.py").is_file():
        raise MissingFileError(f"{space_dir} has no app.py: give the Space's folder with --space-dir")
    api = HfApi(token=token)
    with hub_errors(), quiet_uploads(), tempfile.TemporaryDirectory(prefix="charlstm-space-") as staging:
        staging = Path(staging)
        source_files = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
        shutil.copytree(space_dir, staging, dirs_exist_ok=True, ignore=source_files)
        # The bundled models stay behind (the Space loads the models it is given by Hub id), and so does the
        # package's copy of the Space itself (hub/space/), which is already at the top.
        shutil.copytree(PACKAGE_DIR, staging / "charlstm",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "bundled", "space"))
        if not (staging / "requirements.txt").is_file():
            (staging / "requirements.txt").write_text("\n".join(package_requirements()) + "\n")
        write_space_card(staging / MODEL_CARD, [model_id] + ([detector_id] if detector_id else []))
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        set_space_variables(api, repo_id, {"MODEL_ID": model_id, "DETECTOR_ID": detector_id})
        head = commit_folder(api, staging, repo_id, "space", None, commit_message or "Upload charlstm Space")
    return PushResult(str(url), head, head)


def write_space_card(path: Path, models: list[str]) -> None:
    """The Space's README: its own text when `space/` has one, with the metadata a Gradio Space needs set."""
    card = SpaceCard(path.read_text(encoding="utf-8")) if path.is_file() else SpaceCard(
        "---\n---\n\n# charlstm\n\nWrite Yelp-style reviews with a character-level LSTM, streamed as they are "
        "written, and score a review for signs of having been machine-written.\n"
    )
    data: SpaceCardData = card.data
    data.title = data.title or "charlstm"
    data.sdk, data.app_file = "gradio", data.app_file or "app.py"
    data.sdk_version = data.sdk_version or _installed_version("gradio")
    data.models = models
    path.write_text(str(card), encoding="utf-8")


def set_space_variables(api: HfApi, repo_id: str, wanted: dict[str, str | None]) -> None:
    """Sets each variable to its value (None: removes it), touching only those that differ: a change restarts the
    Space."""
    current = api.get_space_variables(repo_id)
    for key, value in wanted.items():
        if value is None and key in current:
            api.delete_space_variable(repo_id, key)
        elif value is not None and (key not in current or current[key].value != value):
            api.add_space_variable(repo_id, key, value)


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None

"""The Hub-protocol test server answers the real huggingface_hub and datasets clients as huggingface.co would."""

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import get_session

REVIEWS = [{"text": f"Review number {i}: the soup was {'hot' if i % 2 else 'cold'}.", "stars": i % 5 + 1}
           for i in range(12)]


@pytest.fixture()
def model_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "charlstm"}')
    (tmp_path / "weights.safetensors").write_bytes(bytes(range(256)) * 8)  # goes through LFS
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "notes.txt").write_text("deep file\n")
    return tmp_path


def test_download_what_was_published_at_branch_and_commit(hub_server, model_folder, tmp_path_factory):
    first = hub_server.publish(model_folder, "tester/roundtrip")
    (model_folder / "config.json").write_text('{"model_type": "charlstm", "v": 2}')
    second = hub_server.publish(model_folder, "tester/roundtrip")

    assert len(first) == 40 and first != second
    old = hf_hub_download("tester/roundtrip", "config.json", revision=first)
    assert json.loads(open(old).read()) == {"model_type": "charlstm"}
    new = hf_hub_download("tester/roundtrip", "config.json")
    assert json.loads(open(new).read())["v"] == 2
    weights = hf_hub_download("tester/roundtrip", "weights.safetensors", revision=second)
    assert open(weights, "rb").read() == (model_folder / "weights.safetensors").read_bytes()

    snapshot = snapshot_download("tester/roundtrip", revision=first, local_dir=tmp_path_factory.mktemp("snap"))
    files = sorted(path.relative_to(snapshot).as_posix() for path in Path(snapshot).rglob("*")
                   if path.is_file() and ".cache" not in path.parts)
    assert files == [".gitattributes", "config.json", "nested/notes.txt", "weights.safetensors"]

    info = {entry.path: entry for entry in HfApi().get_paths_info("tester/roundtrip", ["weights.safetensors",
                                                                                       "config.json", "nested"])}
    assert info["weights.safetensors"].lfs.size == 2048 and info["config.json"].lfs is None
    assert info["nested"].tree_id  # folders are listed as folders


def test_publishing_unchanged_files_makes_no_commit(hub_server, model_folder):
    first = hub_server.publish(model_folder, "tester/idempotent")
    assert hub_server.publish(model_folder, "tester/idempotent") == first


def test_branches_are_separate_revisions(hub_server, model_folder):
    hub_server.publish(model_folder, "tester/branches")
    (model_folder / "config.json").write_text('{"branch": "experiment"}')
    on_branch = hub_server.publish(model_folder, "tester/branches", revision="experiment")

    assert json.loads(open(hf_hub_download("tester/branches", "config.json", revision="experiment")).read()) == {
        "branch": "experiment"}
    assert HfApi().model_info("tester/branches", revision="experiment").sha == on_branch
    assert HfApi().model_info("tester/branches").sha != on_branch


def test_missing_things_raise_the_clients_own_errors(hub_server, model_folder):
    hub_server.publish(model_folder, "tester/errors")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/does-not-exist", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/errors", "config.json", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/errors", "missing.json")


def test_private_repo_needs_the_token(hub_server, model_folder, tmp_path):
    hub_server.publish(model_folder, "tester/private", private=True)
    assert hf_hub_download("tester/private", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/private", "config.json", token=False, cache_dir=tmp_path)


def test_tree_listing_follows_pagination(hub_server, tmp_path):
    for i in range(7):
        (tmp_path / f"file{i}.txt").write_text(str(i))
    hub_server.publish(tmp_path, "tester/many-files")
    hub_server.page_size = 3
    try:
        listed = [entry.path for entry in HfApi().list_repo_tree("tester/many-files", recursive=True)]
    finally:
        hub_server.page_size = 1000
    assert listed == [".gitattributes"] + [f"file{i}.txt" for i in range(7)]


@pytest.mark.parametrize("data_format", ["jsonl", "parquet"])
def test_load_dataset_from_a_dataset_repo(hub_server, tmp_path, data_format):
    import datasets

    (tmp_path / "data").mkdir()
    if data_format == "jsonl":
        (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in REVIEWS))
    else:
        datasets.Dataset.from_list(REVIEWS).to_parquet(tmp_path / "data" / "train.parquet")
    repo_id = f"tester/reviews-{data_format}"
    commit = hub_server.publish(tmp_path, repo_id, repo_type="dataset")

    loaded = datasets.load_dataset(repo_id, split="train")
    assert loaded.to_list() == REVIEWS
    pinned = datasets.load_dataset(repo_id, split="train", revision=commit)
    assert pinned.to_list() == REVIEWS


def test_unknown_routes_and_foreign_hosts_are_refused_loudly(hub_server):
    response = get_session().get(f"{hub_server.endpoint}/api/not-a-route")
    assert response.status_code == 404 and "no route for GET /api/not-a-route" in response.json()["error"]
    # The suite's HTTP(S)_PROXY points at the server: traffic meant for another host never leaves the machine.
    response = get_session().get("http://example.invalid/api/whoami-v2")
    assert response.status_code == 404 and "refused" in response.json()["error"]


def test_a_readme_with_broken_metadata_is_refused_before_upload(hub_server, tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: [unclosed\n---\n# Card\n")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        hub_server.publish(tmp_path, "tester/broken-card")
    assert HfApi().list_repo_files("tester/broken-card") == [".gitattributes"]

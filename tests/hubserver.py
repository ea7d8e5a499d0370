"""A Hugging Face Hub protocol server on 127.0.0.1, so tests exercise the real client code with no network.

`huggingface_hub`, `transformers` and `datasets` talk to it over HTTP exactly as they talk to huggingface.co
(`HF_ENDPOINT` points here): repo creation, whoami, preupload, the LFS batch API with a plain PUT, the ndjson
commit endpoint, repo info, paginated tree listings, paths-info, refs, commits, branches and tags, Space
variables, and `resolve` downloads with HEAD, Range and the `X-Error-Code` headers the clients turn into
RepositoryNotFound / RevisionNotFound / EntryNotFound. Model, dataset and space repos; commits get real 40-hex
ids, so `revision=<commit sha>` pins a snapshot.

No registry package implements the write side (olah is a read-only mirror), hence this stdlib server. Blobs
live in a temp dir, repo metadata in memory. A route it does not know answers a loud 404 naming the route, so a
client calling something new fails clearly instead of silently. Run standalone for manual checks:
`python tests/hubserver.py --port 8765` (prints the endpoint and token).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import itertools
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# What the Hub's default .gitattributes sends to LFS (the subset that matters for our files).
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.parquet", "*.arrow",
                "*.zip", "*.gz", "*.tar", "*.npy", "*.npz", "*.pkl", "*.msgpack", "*.model", "*.wasm")
LFS_MIN_SIZE = 10 * 1024 * 1024
INITIAL_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)


class HubError(Exception):
    """An error answer: HTTP status, the Hub's `X-Error-Code` (when it has one) and a message."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    lfs: bool
    git_oid: str  # of the content for a regular file, of the pointer file for an LFS file (as git does)

    @property
    def remote_oid(self) -> str:
        """What preupload reports so clients skip unchanged files: sha256 for LFS, git sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: float
    files: dict[str, StoredFile]


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    sdk: str | None
    created: float
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """A branch, a tag or a commit id (full or an unambiguous prefix of at least 7 hex digits)."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [commit for commit in self.commits if commit.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]


class HubStore:
    """Repos, their commits, and a content-addressed blob store (blobs/<sha256>) shared by all repos."""

    def __init__(self, root: Path, user: str):
        self.root, self.user = root, user
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self._clock = itertools.count()

    # blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).exists()

    def put_blob(self, data: bytes, expected_sha256: str | None = None) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise HubError(400, f"uploaded content has sha256 {sha256}, expected {expected_sha256}")
        path = self.blob_path(sha256)
        if not path.exists():
            partial = path.with_suffix(f".{threading.get_ident()}.part")
            partial.write_bytes(data)
            partial.replace(path)
        return sha256

    def regular_file(self, data: bytes) -> StoredFile:
        return StoredFile(self.put_blob(data), len(data), lfs=False, git_oid=git_blob_oid(data))

    def lfs_file(self, sha256: str, size: int) -> StoredFile:
        if not self.has_blob(sha256):
            raise HubError(422, f"LFS object {sha256} was never uploaded")
        if self.blob_path(sha256).stat().st_size != size:
            raise HubError(422, f"LFS object {sha256} does not have size {size}")
        return StoredFile(sha256, size, lfs=True, git_oid=git_blob_oid(lfs_pointer(sha256, size)))

    # repos
    def repo(self, repo_type: str, repo_id: str, token_ok: bool = True) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not token_ok):
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool, sdk: str | None) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_type, repo_id, private, sdk, time.time())
            self.repos[(repo_type, repo_id)] = repo
            files = {".gitattributes": self.regular_file(INITIAL_GITATTRIBUTES.encode())}
            repo.branches["main"] = self._add_commit(repo, None, "initial commit", "", files)
            return repo

    def _add_commit(self, repo: Repo, parent: str | None, title: str, message: str, files: dict) -> str:
        listing = "\n".join(f"{path} {stored.git_oid}" for path, stored in sorted(files.items()))
        seed = f"{repo.type}/{repo.id}\n{parent}\n{title}\n{message}\n{next(self._clock)}\n{listing}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, title, message, time.time(), dict(files))
        return oid

    def commit(self, repo: Repo, branch: str, header: dict, operations: list[dict]) -> str:
        """Apply ndjson commit operations on top of `branch` and move the branch to the new commit."""
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to an existing branch)", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, f"A commit has happened since. Head is {head.oid}, not {header['parentCommit']}")
            files = dict(head.files)
            for operation in operations:
                self._apply(files, operation["key"], operation["value"])
            repo.branches[branch] = self._add_commit(
                repo, head.oid, header.get("summary") or "", header.get("description") or "", files
            )
            return repo.branches[branch]

    def _apply(self, files: dict[str, StoredFile], key: str, value: dict) -> None:
        path = value["path"].strip("/")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"unsupported encoding {value['encoding']!r} for {path}")
            files[path] = self.regular_file(base64.b64decode(value["content"]))
        elif key == "lfsFile":
            if value.get("algo", "sha256") != "sha256":
                raise HubError(400, f"unsupported LFS hash {value['algo']!r} for {path}")
            files[path] = self.lfs_file(value["oid"], value["size"])
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [name for name in files if name.startswith(path + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for name in doomed:
                del files[name]
        else:
            raise HubError(400, f"hubserver: unsupported commit operation {key!r}")


def tree_entries(commit: Commit, prefix: str, recursive: bool) -> list[tuple[str, StoredFile | None]]:
    """(path, file) for files and (path, None) for folders under `prefix`, sorted, as the Hub lists a tree."""
    base = prefix.strip("/")
    entries: dict[str, StoredFile | None] = {}
    for path, stored in commit.files.items():
        if base and not path.startswith(base + "/"):
            continue
        parts = path[len(base) + 1 if base else 0:].split("/")
        depth = len(parts) if recursive else 1
        for level in range(1, min(depth, len(parts)) + 1):
            name = "/".join(([base] if base else []) + parts[:level])
            entries[name] = stored if level == len(parts) else None
    return sorted(entries.items())


class HubHandler(BaseHTTPRequestHandler):
    """Routes requests to `do_route`; every answer is JSON except file downloads."""

    server: HubServer
    protocol_version = "HTTP/1.1"
    TYPES = r"(?P<type>model|dataset|space)s"
    REPO = r"(?P<repo>[^/]+/[^/]+?)"
    PREFIX = r"(?:(?P<prefix>datasets|spaces)/)?"
    ROUTES = [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"/api/{TYPES}/{REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"/api/{TYPES}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"/api/{TYPES}/{REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("POST", rf"/api/{TYPES}/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{TYPES}/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", rf"/api/{TYPES}/{REPO}/refs", "refs"),
        ("GET", rf"/api/{TYPES}/{REPO}/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", rf"/api/{TYPES}/{REPO}/branch/(?P<name>[^/]+)", "create_branch"),
        ("DELETE", rf"/api/{TYPES}/{REPO}/branch/(?P<name>[^/]+)", "delete_branch"),
        ("POST", rf"/api/{TYPES}/{REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", rf"/api/{TYPES}/{REPO}/tag/(?P<name>[^/]+)", "delete_tag"),
        ("GET", rf"/api/spaces/{REPO}/variables", "space_variables"),
        ("POST", rf"/api/spaces/{REPO}/variables", "add_space_variable"),
        ("DELETE", rf"/api/spaces/{REPO}/variables", "delete_space_variable"),
        ("POST", rf"/{PREFIX}{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("GET", rf"/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
    COMPILED = [(method, re.compile(pattern), name) for method, pattern, name in ROUTES]

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_CONNECT(self):
        self.dispatch("CONNECT")

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if self.server.verbose:
            super().log_message(format, *args)

    # plumbing
    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if method == "CONNECT" or url.netloc not in ("", self.server.host_port):
                # The test environment points HTTP(S)_PROXY here: this is traffic that tried to leave the machine.
                target = self.path if method == "CONNECT" else url.netloc
                message = f"hubserver: refused {method} to {target} (only the Hub protocol on {self.server.host_port})"
                print(message, file=sys.stderr)
                raise HubError(404, message)
            for route_method, pattern, name in self.COMPILED:
                match = pattern.fullmatch(url.path)
                if match and route_method == method:
                    # Path segments arrive percent-encoded (a branch "a/b" is "a%2Fb"): decode each captured part.
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    return getattr(self, f"route_{name}")(**params)
            message = f"hubserver: no route for {method} {url.path}"
            print(message, file=sys.stderr)
            raise HubError(404, message)
        except HubError as error:
            self.send_json({"error": error.message}, error.status, error.code)
        except Exception as error:  # a bug here: answer 500 with the reason rather than hang up
            print(f"hubserver: {method} {url.path} failed: {error!r}", file=sys.stderr)
            self.send_json({"error": f"hubserver internal error: {error!r}"}, 500)

    def send_json(self, payload, status: int = 200, error_code: str | None = None, headers: dict | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if status >= 400:
            self.send_header("X-Error-Message", payload["error"][:200].replace("\n", " "))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"request body is not JSON: {error}") from None

    @property
    def store(self) -> HubStore:
        return self.server.store

    @property
    def authenticated(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.server.token}"

    def require_token(self) -> None:
        if not self.authenticated:
            raise HubError(401, "Invalid credentials in Authorization header")

    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.host_port}"

    def repo(self, type: str, repo: str) -> Repo:  # noqa: A002 - route group name
        return self.store.repo(type, repo, token_ok=self.authenticated)

    def repo_from_prefix(self, prefix: str | None, repo: str) -> Repo:
        return self.repo({"datasets": "dataset", "spaces": "space", None: "model"}[prefix], repo)

    def bool_param(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")

    # account and repos
    def route_whoami(self):
        self.require_token()
        user = self.server.user
        self.send_json({"type": "user", "id": "0" * 24, "name": user, "fullname": user, "email": None,
                        "orgs": [], "auth": {"type": "access_token",
                                             "accessToken": {"displayName": "hubserver", "role": "write"}}})

    def route_create_repo(self):
        self.require_token()
        body = self.json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"hubserver: unsupported repo type {repo_type!r}")
        if repo_type == "space" and not body.get("sdk"):
            raise HubError(400, "a Space needs an sdk")
        repo_id = f"{body.get('organization') or self.server.user}/{body['name']}"
        private = body.get("private", body.get("visibility") == "private") or False
        url = f"{self.base_url()}/{URL_PREFIXES[repo_type]}{repo_id}"
        try:
            repo = self.store.create_repo(repo_type, repo_id, private, body.get("sdk"))
        except HubError as error:  # the Hub's 409 carries the existing repo's url, which create_repo(exist_ok) reads
            return self.send_json({"error": error.message, "url": url}, error.status)
        for variable in body.get("variables") or []:
            repo.variables[variable["key"]] = {"value": variable["value"], "description": variable.get("description")}
        self.send_json({"url": url, "name": repo_id, "id": repo_id})

    def route_delete_repo(self):
        self.require_token()
        body = self.json_body()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.server.user}/{body['name']}"
        with self.store.lock:
            self.store.repo(repo_type, repo_id)
            del self.store.repos[(repo_type, repo_id)]
        self.send_json({})

    def route_validate_yaml(self):
        """Reject a README whose YAML front matter does not parse or is not a mapping, as the Hub does."""
        content = self.json_body().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as error:
                raise HubError(400, f"Invalid YAML in README.md: {error}") from None
            if metadata is not None and not isinstance(metadata, dict):
                raise HubError(400, "Invalid YAML in README.md: the metadata must be a mapping")
        self.send_json({"errors": [], "warnings": []})

    def route_repo_info(self, type, repo, rev="main"):  # noqa: A002
        repository = self.repo(type, repo)
        commit = repository.resolve(rev)
        blobs = self.bool_param("blobs")
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    pointer_size = len(lfs_pointer(stored.sha256, stored.size))
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256, "pointerSize": pointer_size}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{type}/{repo}".encode()).hexdigest()[:24], "id": repo,
            "author": repo.split("/")[0], "sha": commit.oid, "private": repository.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "createdAt": iso_time(repository.created), "lastModified": iso_time(commit.date),
            "cardData": self.card_data(commit),
        }
        if type == "space":
            info.update(sdk=repository.sdk, runtime={"stage": "NO_APP_FILE" if "app.py" not in commit.files
                                                     else "BUILDING", "hardware": {"current": None}})
        self.send_json(info)

    def card_data(self, commit: Commit) -> dict | None:
        stored = commit.files.get("README.md")
        if stored is None:
            return None
        match = re.match(r"^---\s*\n(.*?)\n---", self.store.blob_path(stored.sha256).read_text(), re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:
            return None
        return metadata if isinstance(metadata, dict) else None

    # listings
    def entry_json(self, commit: Commit, path: str, stored: StoredFile | None, expand: bool) -> dict:
        if stored is None:
            children = "\n".join(f"{name} {file.git_oid}" for name, file in sorted(commit.files.items())
                                 if name.startswith(path + "/"))
            entry = {"type": "directory", "oid": hashlib.sha1(children.encode()).hexdigest(), "size": 0, "path": path}
        else:
            entry = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
            if stored.lfs:
                pointer_size = len(lfs_pointer(stored.sha256, stored.size))
                entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": pointer_size}
        if expand:
            last = self.last_commit_touching(commit, path, stored)
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": iso_time(last.date)}
        return entry

    def last_commit_touching(self, commit: Commit, path: str, stored: StoredFile | None) -> Commit:
        """Walk back while the path (a file, or every file under a folder) is unchanged."""

        def snapshot(of: Commit):
            if stored is not None:
                return of.files.get(path)
            return {name: file for name, file in of.files.items() if name.startswith(path + "/")}

        repo_commits = next(repo.commits for repo in self.store.repos.values() if commit.oid in repo.commits)
        current = commit
        while current.parent is not None and snapshot(repo_commits[current.parent]) == snapshot(commit):
            current = repo_commits[current.parent]
        return current

    def route_tree(self, type, repo, rev, path=""):  # noqa: A002
        commit = self.repo(type, repo).resolve(rev)
        path = path.strip("/")
        if path and not any(name.startswith(path + "/") for name in commit.files):
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        entries = tree_entries(commit, path, self.bool_param("recursive"))
        expand = self.bool_param("expand")
        # Cursor pagination with a Link header, as the Hub does (1000 entries a page, 50 when expanded).
        page_size = self.server.page_size if not expand else max(1, self.server.page_size // 20)
        start = int(self.query.get("cursor", ["0"])[-1])
        page = entries[start:start + page_size]
        headers = {}
        if start + page_size < len(entries):
            query = "&".join(f"{key}={quote(values[-1])}" for key, values in self.query.items() if key != "cursor")
            next_url = f"{self.base_url()}{urlsplit(self.path).path}?{query}&cursor={start + page_size}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self.send_json([self.entry_json(commit, name, stored, expand) for name, stored in page], headers=headers)

    def route_paths_info(self, type, repo, rev):  # noqa: A002
        commit = self.repo(type, repo).resolve(rev)
        if "json" in (self.headers.get("Content-Type") or ""):
            body = self.json_body()
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:  # huggingface_hub posts a form: paths=a&paths=b&expand=False
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() == "true"
        answer = []
        for path in (p.strip("/") for p in ([paths] if isinstance(paths, str) else paths)):
            if path in commit.files:
                answer.append(self.entry_json(commit, path, commit.files[path], expand))
            elif any(name.startswith(path + "/") for name in commit.files):
                answer.append(self.entry_json(commit, path, None, expand))
        self.send_json(answer)

    def route_refs(self, type, repo):  # noqa: A002
        repository = self.repo(type, repo)

        def refs(names: dict, kind: str):
            return [{"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid} for name, oid in names.items()]

        self.send_json({"branches": refs(repository.branches, "heads"), "tags": refs(repository.tags, "tags"),
                        "converts": [], "pullRequests": []})

    def route_commits(self, type, repo, rev):  # noqa: A002
        repository = self.repo(type, repo)
        history, commit = [], repository.resolve(rev)
        while commit is not None:
            history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                            "date": iso_time(commit.date), "authors": [{"user": self.server.user}]})
            commit = repository.commits.get(commit.parent) if commit.parent else None
        self.send_json(history)

    # writing
    def writable_repo(self, type: str, repo: str) -> Repo:  # noqa: A002
        self.require_token()
        return self.repo(type, repo)

    def route_create_branch(self, type, repo, name):  # noqa: A002
        repository = self.writable_repo(type, repo)
        with self.store.lock:
            if name in repository.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{name}")
            start = self.json_body().get("startingPoint") or "main"
            repository.branches[name] = repository.resolve(start).oid
        self.send_json({})

    def route_delete_branch(self, type, repo, name):  # noqa: A002
        repository = self.writable_repo(type, repo)
        if name == "main" or repository.branches.pop(name, None) is None:
            raise HubError(404 if name != "main" else 403, f"cannot delete branch {name}", "RevisionNotFound")
        self.send_json({})

    def route_create_tag(self, type, repo, rev):  # noqa: A002
        repository = self.writable_repo(type, repo)
        tag = self.json_body()["tag"]
        with self.store.lock:
            if tag in repository.tags:
                raise HubError(409, f"Tag already exists: {tag}")
            repository.tags[tag] = repository.resolve(rev).oid
        self.send_json({})

    def route_delete_tag(self, type, repo, name):  # noqa: A002
        if self.writable_repo(type, repo).tags.pop(name, None) is None:
            raise HubError(404, f"no tag {name}", "RevisionNotFound")
        self.send_json({})

    def route_preupload(self, type, repo, rev):  # noqa: A002
        head = self.writable_repo(type, repo).resolve(rev)
        if self.query.get("create_pr"):
            raise HubError(400, "hubserver: pull requests are not supported")
        answer = []
        for file in self.json_body()["files"]:
            sample = base64.b64decode(file["sample"])
            lfs = (file["size"] >= LFS_MIN_SIZE or b"\0" in sample
                   or any(fnmatch.fnmatch(file["path"].rsplit("/", 1)[-1], p) for p in LFS_PATTERNS))
            existing = head.files.get(file["path"])
            answer.append({"path": file["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": existing.remote_oid if existing and existing.lfs == lfs else None})
        self.send_json({"files": answer, "commitOid": head.oid})

    def route_lfs_batch(self, repo, prefix=None):
        self.require_token()
        self.repo_from_prefix(prefix, repo)
        body = self.json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "hubserver: the LFS batch API here only uploads (downloads go through resolve)")
        objects = []
        for item in body["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if not self.store.has_blob(item["oid"]):
                answer["actions"] = {"upload": {"href": f"{self.base_url()}/lfs-upload/{item['oid']}"}}
            objects.append(answer)
        self.send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def route_lfs_upload(self, oid):
        failing = self.server.failing_uploads
        if failing == "hang up":  # as a connection that breaks mid-upload: no answer at all
            self.close_connection = True
            return
        if failing is not None:
            raise HubError(failing, "hubserver: this upload fails (HubServer.uploads_failing)")
        self.store.put_blob(self.body, expected_sha256=oid)
        self.send_json({})

    def route_commit(self, type, repo, rev):  # noqa: A002
        repository = self.writable_repo(type, repo)
        if self.query.get("create_pr"):
            raise HubError(400, "hubserver: pull requests are not supported")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit payload starts with a header line")
        oid = self.store.commit(repository, rev, lines[0]["value"], lines[1:])
        url = f"{self.base_url()}/{URL_PREFIXES[type]}{repo}/commit/{oid}"
        self.send_json({"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    # Space variables (what a Space receives as environment variables)
    def route_space_variables(self, repo):
        self.send_json(self.writable_repo("space", repo).variables)

    def route_add_space_variable(self, repo):
        repository, body = self.writable_repo("space", repo), self.json_body()
        repository.variables[body["key"]] = {"value": body["value"], "description": body.get("description"),
                                             "updatedAt": iso_time(time.time())}
        self.send_json(repository.variables)

    def route_delete_space_variable(self, repo):
        repository = self.writable_repo("space", repo)
        repository.variables.pop(self.json_body()["key"], None)
        self.send_json(repository.variables)

    # downloads
    def route_resolve(self, repo, rev, path, prefix=None):
        repository = self.repo_from_prefix(prefix, repo)
        commit = repository.resolve(rev)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path} at {rev}", "EntryNotFound")
        size, start, end = stored.size, 0, stored.size - 1
        status, headers = 200, {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.git_oid}"', "Accept-Ranges": "bytes"}
        if stored.lfs:  # the Hub names an LFS file by its sha256, in the linked headers
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(size)})
        requested = self.headers.get("Range")
        if requested:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", requested.strip())
            if not match or not any(match.groups()):
                raise HubError(416, f"unsupported Range {requested!r}")
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:
                start, end = max(0, size - int(last)), size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            with open(self.store.blob_path(stored.sha256), "rb") as blob:
                blob.seek(start)
                self.wfile.write(blob.read(end - start + 1))


class HubServer(ThreadingHTTPServer):
    """`with HubServer(port=0) as hub:` serves on 127.0.0.1 in a background thread; `hub.endpoint`, `hub.token`."""

    daemon_threads = True

    def __init__(self, port: int = 0, token: str = "hf_hubserver_test_token", user: str = "tester",
                 page_size: int = 1000, root: Path | None = None, verbose: bool = False):
        super().__init__(("127.0.0.1", port), HubHandler)
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hubserver-")) if root is None else Path(root)
        self.store = HubStore(self.root, user)
        self.token, self.user, self.page_size, self.verbose = token, user, page_size, verbose
        self.host_port = f"127.0.0.1:{self.server_address[1]}"
        self.endpoint = f"http://{self.host_port}"
        self._thread: threading.Thread | None = None
        self.failing_uploads: int | str | None = None  # see `uploads_failing`

    @contextmanager
    def uploads_failing(self, status: int | str = "hang up"):
        """
        Within it every LFS upload fails: the server hangs up without an answer, as a network that drops
        mid-upload (huggingface_hub retries that for about a minute), or answers `status` (a 4xx is not retried,
        like the storage refusing an expired upload URL). For tests of what a client says and what a repo holds
        afterwards.
        """
        self.failing_uploads = status
        try:
            yield
        finally:
            self.failing_uploads = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hubserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def publish(self, folder: str | Path, repo_id: str, repo_type: str = "model", revision: str | None = None,
                private: bool = False, commit_message: str = "Publish test folder") -> str:
        """Upload a local folder as a repo with the real `huggingface_hub` client; returns the commit id."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self.token)
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                        space_sdk="gradio" if repo_type == "space" else None)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                   revision=revision, commit_message=commit_message)
        return commit.oid

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="hf_hubserver_test_token")
    args = parser.parse_args()
    server = HubServer(port=args.port, token=args.token, verbose=True)
    print(f"HF_ENDPOINT={server.endpoint} HF_TOKEN={args.token} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

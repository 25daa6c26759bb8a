"""A local server that speaks the Hugging Face Hub's HTTP API, so `huggingface_hub`, `transformers` and `datasets`
run unpatched against it in tests.

What it implements (model, dataset and space repos alike):
    GET  /api/whoami-v2                                  a fixed user
    POST /api/repos/create, /api/repos/delete            409 when the repo exists (create_repo(exist_ok=True) passes)
    POST /api/validate-yaml                              accepts everything
    GET  /api/{type}s/{repo}[/revision/{rev}]            repo info: sha, siblings (with sizes and LFS), card data
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]         ?recursive; 404 + X-Error-Code EntryNotFound when absent
    POST /api/{type}s/{repo}/paths-info/{rev}            form or JSON `paths`
    GET  /api/{type}s/{repo}/refs, /commits/{rev}        branches and history
    POST /api/{type}s/{repo}/branch/{name}               new branch (409 when it exists)
    POST /api/{type}s/{repo}/preupload/{rev}             uploadMode "lfs" for binary/large/LFS-typed files
    POST /api/{type}s/{repo}/commit/{rev}                NDJSON: header, file (base64), lfsFile, deletedFile,
                                                         deletedFolder; parentCommit checked; branch created
    POST /{[datasets/]repo}.git/info/lfs/objects/batch   basic transfer, PUT href below, objects already stored skip
    PUT  /lfs-upload/{sha256}                            content checked against the oid and size
    GET|HEAD /{[datasets/]repo}/resolve/{rev}/{path}     ETag (git blob sha, or sha256 + X-Linked-Etag for LFS),
                                                         X-Repo-Commit, Range requests

Files live in a temporary directory, addressed by sha256; commits get real sha1 ids computed from their parent,
message and file ids, so a new push changes the revision a client caches.

Clients must be started with `MockHub.client_env(home)`: `huggingface_hub.constants.ENDPOINT` is read when the
package is imported, so the client runs in a subprocess whose environment points `HF_ENDPOINT` at this server (with
`HF_HUB_DISABLE_XET=1`, since Xet uploads need the real CAS service, and an empty `HF_HOME`). Use the `mock_hub`
fixture (import it into a test module: `from mock_hub import mock_hub  # noqa: F401`) and `run_hub_client`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

USER = "tester"
TOKEN = "hf_dummy"
REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
# Extensions the Hub's default .gitattributes stores with LFS; any file over the size limit or with a NUL byte in
# its first 512 bytes is LFS too (the preupload sample).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".parquet", ".arrow", ".mp4", ".npy", ".npz", ".gguf")
LFS_SIZE_LIMIT = 10 * 1024 * 1024
COMMIT_PAGE = 50


class HubError(Exception):
    """An HTTP error the client should see: status, `X-Error-Code` and a message."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


@dataclass(frozen=True)
class Blob:
    """One file in a commit: content addressed by sha256; `oid` is what git (and the Hub) call its blob id."""

    sha256: str
    size: int
    lfs: bool
    content_sha1: str  # git blob id of the content itself (what `_local_oid` of a regular upload is)

    @property
    def oid(self) -> str:
        """git stores an LFS file as its pointer, so that is the blob id of an LFS file."""
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self.content_sha1


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


def git_blob_sha1(content: bytes) -> str:
    """git's object id of a blob: sha1 over `blob <size>\\0<content>`."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def tree_oid(entries: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()


class HubStore:
    """Repositories, commits and content, shared by the server's threads (one lock; tests are small)."""

    def __init__(self, root: Path):
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()

    # --- content --------------------------------------------------------------------------------------------------
    def put_content(self, content: bytes, lfs: bool) -> Blob:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self.blobs / sha256
        if not path.exists():
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return Blob(sha256=sha256, size=len(content), lfs=lfs, content_sha1=git_blob_sha1(content))

    def has_lfs_object(self, sha256: str, size: int) -> bool:
        path = self.blobs / sha256
        return path.exists() and path.stat().st_size == size

    def read(self, blob: Blob) -> bytes:
        return (self.blobs / blob.sha256).read_bytes()

    # --- repos ----------------------------------------------------------------------------------------------------
    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_type}/{repo_id} not found", "RepoNotFound")
        return repo

    def create(self, repo_type: str, repo_id: str, private: bool, url: str) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:  # the Hub names the existing repo's url in the 409 too
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now_iso())
            self.repos[(repo_type, repo_id)] = repo
            initial = {".gitattributes": self.put_content(gitattributes(), lfs=False)}
            self._add_commit(repo, DEFAULT_BRANCH, None, "initial commit", "", initial)
            return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            self.repo(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """A branch name or a full commit sha -> the commit."""
        revision = unquote(revision)
        sha = repo.branches.get(revision, revision)
        if sha not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def commit(self, repo: Repo, branch: str, header: dict, operations: list[tuple[str, str, Blob | None]]) -> Commit:
        """Apply ("add" | "delete" | "delete_folder", path, blob) on top of `branch`, creating the branch if new."""
        with self.lock:
            branch = unquote(branch)
            head_sha = repo.branches.get(branch) or repo.branches[DEFAULT_BRANCH]
            parent = header.get("parentCommit")
            if parent and parent != head_sha:
                raise HubError(412, f"parentCommit {parent} is not the head of {branch} ({head_sha})")
            files = dict(repo.commits[head_sha].files)
            for kind, path, blob in operations:
                if kind == "add":
                    files[path] = blob
                elif kind == "delete":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                else:
                    prefix = path.rstrip("/") + "/"
                    files = {name: b for name, b in files.items() if not name.startswith(prefix)}
            title = header.get("summary") or "Upload files"
            return self._add_commit(repo, branch, head_sha, title, header.get("description", ""), files)

    def _add_commit(self, repo, branch, parent, title, description, files) -> Commit:
        date = now_iso()
        identity = json.dumps([parent, title, description, date, sorted((p, b.oid) for p, b in files.items())])
        sha = hashlib.sha1(f"commit {len(identity)}\x00{identity}".encode()).hexdigest()
        commit = Commit(sha=sha, parent=parent, title=title, description=description, date=date, files=files)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit


def gitattributes() -> bytes:
    return "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE_LIMIT or b"\x00" in sample


def file_entry(path: str, blob: Blob, commit: Commit) -> dict:
    entry = {"type": "file", "path": path, "size": blob.size, "oid": blob.oid}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
    entry["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
    return entry


def folder_entry(path: str, commit: Commit) -> dict:
    inside = [f"{p}:{b.oid}" for p, b in commit.files.items() if p.startswith(path + "/")]
    return {
        "type": "directory",
        "path": path,
        "oid": tree_oid(inside),
        "lastCommit": {"id": commit.sha, "title": commit.title, "date": commit.date},
    }


def list_tree(commit: Commit, path: str, recursive: bool) -> list[dict]:
    """Entries under `path` ("" = root): files and folders, one level or all of them."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and not any(name.startswith(prefix) for name in commit.files):
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
    entries, folders = [], set()
    for name in sorted(commit.files):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(file_entry(name, commit.files[name], commit))
    return [folder_entry(folder, commit) for folder in sorted(folders)] + entries


def path_info(commit: Commit, path: str) -> dict | None:
    path = path.strip("/")
    if path in commit.files:
        return file_entry(path, commit.files[path], commit)
    if any(name.startswith(path + "/") for name in commit.files):
        return folder_entry(path, commit)
    return None


def card_data(store: HubStore, commit: Commit) -> dict | None:
    """The YAML front matter of README.md as a dict (what the Hub returns as `cardData`)."""
    readme = commit.files.get("README.md")
    if readme is None:
        return None
    text = store.read(readme).decode("utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, flags=re.S)
    if not match:
        return None
    import yaml  # a dependency of datasets and transformers' model cards

    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class HubHandler(BaseHTTPRequestHandler):
    """Routes one request; every response carries a Content-Length so keep-alive connections stay in sync."""

    protocol_version = "HTTP/1.1"
    server: MockHubServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        if os.environ.get("MOCK_HUB_VERBOSE"):
            sys.stderr.write("mock-hub: " + format % args + "\n")

    # --- plumbing -------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            segments = [unquote(s) for s in url.path.split("/")[1:]]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, payload, headers = self._route(method, segments, query, body)
        except HubError as error:
            status, headers = error.status, {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            payload = {"error": error.message, **error.extra}
        except Exception as error:  # a bug in the mock: tell the client, loudly
            status, headers, payload = 500, {}, {"error": f"mock hub: {type(error).__name__}: {error}"}
            sys.stderr.write(f"mock-hub: {method} {self.path} failed: {error!r}\n")
        self._respond(method, status, payload, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _respond(self, method: str, status: int, payload, headers: dict) -> None:
        if isinstance(payload, bytes):
            data = payload
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(headers.pop("_length", len(data))))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _json(self, body: bytes) -> dict:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"invalid JSON body: {error}") from error

    # --- routing --------------------------------------------------------------------------------------------------
    def _route(self, method: str, seg: list[str], query: dict, body: bytes):
        store = self.server.store
        if seg[:1] == ["api"]:
            return self._route_api(method, seg[1:], query, body)
        if method == "PUT" and seg[:1] == ["lfs-upload"]:
            return self._lfs_put(seg[1], body)
        repo_type, rest = ("dataset", seg[1:]) if seg[:1] == ["datasets"] else ("model", seg)
        if rest[:1] == ["spaces"]:
            repo_type, rest = "space", rest[1:]
        if len(rest) >= 2 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            repo = store.repo(repo_type, f"{rest[0]}/{rest[1][: -len('.git')]}")
            return self._lfs_batch(repo, self._json(body))
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            repo = store.repo(repo_type, f"{rest[0]}/{rest[1]}")
            return self._resolve(repo, rest[3], "/".join(rest[4:]))
        raise HubError(404, f"mock hub has no route for {method} {self.path}")

    def _route_api(self, method: str, seg: list[str], query: dict, body: bytes):
        store = self.server.store
        if seg == ["whoami-v2"]:
            return 200, whoami(), {}
        if seg == ["repos", "create"] and method == "POST":
            request = self._json(body)
            repo_id = "/".join(p for p in (request.get("organization") or USER, request["name"]) if p)
            repo_type = request.get("type") or "model"
            url = f"{self.server.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            store.create(repo_type, repo_id, request.get("visibility", "public") != "public", url)
            return 200, {"url": url, "name": repo_id}, {}
        if seg == ["repos", "delete"] and method == "POST":
            request = self._json(body)
            repo_id = "/".join(p for p in (request.get("organization") or USER, request["name"]) if p)
            store.delete(request.get("type") or "model", repo_id)
            return 200, {}, {}
        if seg == ["validate-yaml"]:
            return 200, {"errors": [], "warnings": []}, {}
        if len(seg) < 3 or seg[0].rstrip("s") not in REPO_TYPES:
            raise HubError(404, f"mock hub has no API route /api/{'/'.join(seg)}")
        repo_type, repo = seg[0][:-1], None
        with store.lock:
            repo = store.repo(repo_type, f"{seg[1]}/{seg[2]}")
            action, args = (seg[3], seg[4:]) if len(seg) > 3 else ("revision", [DEFAULT_BRANCH])
            revision = args[0] if args else DEFAULT_BRANCH
            if action == "revision" and method == "GET":
                return 200, self._repo_info(repo, store.resolve(repo, revision)), {}
            if action == "tree" and method == "GET":
                recursive = query.get("recursive", "false").lower() == "true"
                return 200, list_tree(store.resolve(repo, revision), "/".join(args[1:]), recursive), {}
            if action == "paths-info" and method == "POST":
                return 200, self._paths_info(store.resolve(repo, revision), body), {}
            if action == "refs" and method == "GET":
                return 200, refs(repo), {}
            if action == "commits" and method == "GET":
                return 200, history(repo, store.resolve(repo, revision)), {}
            if action == "preupload" and method == "POST":
                return 200, self._preupload(repo, revision, self._json(body)), {}
            if action == "branch" and method == "POST" and args:
                return 200, self._create_branch(repo, "/".join(args), self._json(body)), {}
        if action == "commit" and method == "POST":
            return 200, self._commit(repo, revision, body), {}
        raise HubError(404, f"mock hub has no API route {method} /api/{'/'.join(seg)}")

    # --- handlers -------------------------------------------------------------------------------------------------
    def _repo_info(self, repo: Repo, commit: Commit) -> dict:
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling = {"rfilename": path, "size": blob.size, "blobId": blob.oid}
            if blob.lfs:
                pointer = len(lfs_pointer(blob.sha256, blob.size))
                sibling["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": pointer}
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": card_data(self.server.store, commit),
            "siblings": siblings,
            "usedStorage": sum(blob.size for blob in commit.files.values()),
        }

    def _paths_info(self, commit: Commit, body: bytes) -> list[dict]:
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = self._json(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        return [info for info in (path_info(commit, p) for p in paths) if info is not None]

    def _preupload(self, repo: Repo, revision: str, request: dict) -> dict:
        branch = unquote(revision)
        head = repo.commits[repo.branches.get(branch) or repo.branches[DEFAULT_BRANCH]]
        files = []
        for item in request.get("files", []):
            path, size, sample = item["path"], int(item["size"]), base64.b64decode(item.get("sample", ""))
            lfs = is_lfs(path, size, sample)
            existing = head.files.get(path)
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.content_sha1)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": files, "commitOid": head.sha}

    def _commit(self, repo: Repo, revision: str, body: bytes) -> dict:
        store = self.server.store
        header: dict = {}
        operations: list[tuple[str, str, Blob | None]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"]
                content = content if isinstance(content, bytes) else content.encode()
                operations.append(("add", value["path"], store.put_content(content, lfs=False)))
            elif key == "lfsFile":
                if not store.has_lfs_object(value["oid"], int(value["size"])):
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                blob = Blob(sha256=value["oid"], size=int(value["size"]), lfs=True, content_sha1="")
                operations.append(("add", value["path"], blob))
            elif key == "deletedFile":
                operations.append(("delete", value["path"], None))
            elif key == "deletedFolder":
                operations.append(("delete_folder", value["path"], None))
            else:
                raise HubError(400, f"mock hub does not support commit operation {key!r}")
        commit = store.commit(repo, revision, header, operations)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return {
            "commitUrl": f"{self.server.url}/{prefix}{repo.repo_id}/commit/{commit.sha}",
            "commitOid": commit.sha,
            "pullRequestUrl": None,
            "success": True,
        }

    def _create_branch(self, repo: Repo, branch: str, request: dict) -> dict:
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = request.get("startingPoint") or DEFAULT_BRANCH
        repo.branches[branch] = self.server.store.resolve(repo, start).sha
        return {}

    def _lfs_batch(self, repo: Repo, request: dict):
        objects = []
        for item in request.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry = {"oid": oid, "size": size, "authenticated": True}
            if not self.server.store.has_lfs_object(oid, size):
                entry["actions"] = {"upload": {"href": f"{self.server.url}/lfs-upload/{oid}?size={size}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_put(self, oid: str, body: bytes):
        expected = parse_qs(urlsplit(self.path).query).get("size", [None])[0]
        if hashlib.sha256(body).hexdigest() != oid or (expected is not None and int(expected) != len(body)):
            raise HubError(400, f"uploaded content does not match LFS oid {oid} (got {len(body)} bytes)")
        self.server.store.put_content(body, lfs=True)
        return 200, b"", {}

    def _resolve(self, repo: Repo, revision: str, path: str):
        store = self.server.store
        with store.lock:
            commit = store.resolve(repo, revision)
            blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update(
                {"ETag": f'"{blob.sha256}"', "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": blob.size}
            )
        else:
            headers["ETag"] = f'"{blob.content_sha1}"'
        content = store.read(blob)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and content:
            start = int(match.group(1)) if match.group(1) else max(0, len(content) - int(match.group(2)))
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(content) - 1
            end = min(end, len(content) - 1)
            if start > end:
                raise HubError(416, f"range {self.headers['Range']} outside {len(content)} bytes")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return HTTPStatus.PARTIAL_CONTENT, content[start : end + 1], headers
        return 200, content, headers


def whoami() -> dict:
    return {
        "type": "user",
        "id": "0" * 24,
        "name": USER,
        "fullname": "Mock Hub Tester",
        "isPro": False,
        "canPay": False,
        "orgs": [],
        "auth": {"type": "access_token", "accessToken": {"displayName": "mock", "role": "write"}},
    }


def refs(repo: Repo) -> dict:
    branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha} for name, sha in repo.branches.items()]
    return {"branches": branches, "converts": [], "tags": []}


def history(repo: Repo, commit: Commit) -> list[dict]:
    out = []
    while commit is not None and len(out) < COMMIT_PAGE:
        out.append(
            {
                "id": commit.sha,
                "title": commit.title,
                "message": commit.description,
                "date": commit.date,
                "authors": [{"user": USER}],
            }
        )
        commit = repo.commits.get(commit.parent) if commit.parent else None
    return out


class MockHubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.store = HubStore(root)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class MockHub:
    """A running server: `url`, `store`, and the environment a client subprocess needs."""

    def __init__(self, root: Path):
        self.server = MockHubServer(root)
        self.url = self.server.url
        self.store = self.server.store
        self.thread = threading.Thread(target=self.server.serve_forever, name="mock-hub", daemon=True)

    def __enter__(self) -> MockHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def client_env(self, home: Path) -> dict[str, str]:
        """os.environ with the Hub pointed here, online, Xet off and an empty cache under `home`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
        env.pop("PYTHONPATH", None)
        env.update(
            HF_ENDPOINT=self.url,
            HF_TOKEN=TOKEN,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HOME=str(home),
            HF_HUB_CACHE=str(home / "hub"),
            HF_DATASETS_CACHE=str(home / "datasets"),
            HF_MODULES_CACHE=str(home / "modules"),
            TOKENIZERS_PARALLELISM="false",
        )
        return env

    def file_url(self, repo_id: str, path: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.url}/{prefix}{repo_id}/resolve/{quote(revision, safe='')}/{path}"


def run_hub_client(
    hub: MockHub, script: str, args: list[str], workdir: Path, timeout: int = 300, prelude: str = ""
) -> subprocess.CompletedProcess:
    """Run `prelude + script` in a fresh interpreter talking to `hub`, with an empty cache in `workdir/hf_home`.

    Raises with the child's stderr when it fails. `prelude` may hold code that must run first (for example
    `isolated.BLOCK_PACKAGE`, so that only a checkpoint's remote code defines our classes).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="hf_home_", dir=workdir))
    path = workdir / f"hub_client_{len(list(workdir.glob('hub_client_*.py')))}.py"
    path.write_text(prelude + script)
    process = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=workdir,
        env=hub.client_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if process.returncode != 0:
        raise AssertionError(f"hub client failed (rc={process.returncode}):\n{process.stderr[-8000:]}")
    return process


@pytest.fixture
def mock_hub(tmp_path_factory) -> MockHub:
    """A fresh local Hub per test; clients go through `run_hub_client(mock_hub, ...)` or `mock_hub.client_env`."""
    with MockHub(tmp_path_factory.mktemp("mock_hub")) as hub:
        yield hub

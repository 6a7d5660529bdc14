"""An in-memory, Hub-compatible HTTP server for the tests (test code, not part of the library).

It implements the subset of the Hugging Face Hub API that huggingface_hub 2.x uses to create repos, push
commits (regular files inline, large files through the basic LFS transfer), read repo info, list trees and
download files, so that the real clients (huggingface_hub, transformers, timm, datasets) work with no internet.
Model and dataset repos are supported; revisions are branch or tag names and full commit shas.
"""

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset"}  # API path segment -> repo type
URL_PREFIXES = {"model": "", "dataset": "datasets/"}  # repo type -> prefix of the web and resolve URLs
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow")
LFS_MIN_SIZE = 1024 * 1024  # larger files go to LFS whatever their name


def is_lfs(path: str, size: int) -> bool:
    """Whether a file is stored through LFS (the client always sends empty files inline)."""
    return size > 0 and (path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer: HTTP status, the X-Error-Code the client maps to an exception, and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Repo:
    commits: dict = field(default_factory=dict)  # commit sha -> {path: bytes}, oldest first
    refs: dict = field(default_factory=dict)  # branch or tag name -> commit sha

    def resolve(self, revision: str) -> str:
        sha = self.refs.get(revision, revision)
        if sha not in self.commits:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha


def file_oid(path: str, data: bytes) -> str:
    """The oid the client compares and caches by (ETag): the sha256 for LFS files, the git blob sha1 otherwise."""
    return hashlib.sha256(data).hexdigest() if is_lfs(path, len(data)) else git_blob_sha1(data)


def folder_entry(path: str) -> dict:
    """A tree / paths-info entry for one directory (its oid is made up)."""
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}


def file_entry(path: str, data: bytes) -> dict:
    """A tree / paths-info entry for one file."""
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
    if is_lfs(path, len(data)):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}  # nominal
    return entry


def tree_entries(files: dict, folder: str, recursive: bool) -> list:
    """Files and directories under `folder` ("" for the root), like GET .../tree/{rev}/{folder}."""
    prefix = f"{folder}/" if folder else ""
    entries, folders = [], set()
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        depth = len(parts) if recursive else 1
        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(min(depth, len(parts) - 1)))
        if recursive or len(parts) == 1:
            entries.append(file_entry(path, files[path]))
    if folder and not entries and not folders:
        raise HubError(404, "EntryNotFound", f"{folder} does not exist")
    return [folder_entry(f) for f in sorted(folders)] + entries


class LoopbackHub:
    """The server: `start()` it, point the clients at `url`, `stop()` it."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}  # (repo type, "namespace/name") -> Repo
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.lock = threading.Lock()
        self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        if (repo_type, repo_id) not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return self.repos[(repo_type, repo_id)]

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"

    def create_repo(self, repo_type: str, repo_id: str) -> bool:
        """Create an empty repo whose "main" points to an empty commit; False if it already exists."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            sha = secrets.token_hex(20)
            self.repos[(repo_type, repo_id)] = Repo(commits={sha: {}}, refs={"main": sha})
            return True

    def commit(self, repo: Repo, branch: str, lines: list, query: dict) -> str:
        """Apply the NDJSON commit operations on top of `branch` and return the new commit sha."""
        if "create_pr" in query:
            raise HubError(400, "BadRequest", "Pull requests are not supported")
        with self.lock:
            head = repo.resolve(branch)
            files = dict(repo.commits[head])
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header" and value.get("parentCommit") not in (None, head):
                    raise HubError(412, "PreconditionFailed", "A commit has happened since the parent commit")
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        raise HubError(400, "BadRequest", f"LFS object {value['oid']} was not uploaded")
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            sha = secrets.token_hex(20)
            repo.commits[sha] = files
            repo.refs[branch] = sha
            return sha


class _Handler(BaseHTTPRequestHandler):
    """Routes each request to a method of this class; `hub` is set on the subclass made by `LoopbackHub.start`."""

    hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
        pass

    # Plumbing: reading requests and writing answers.

    def _payload(self):
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return parse_qs(self.body.decode())
        return json.loads(self.body or b"{}")

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200):
        self._send(status, json.dumps(payload).encode())

    def _dispatch(self):
        # Always read the body (the clients always send its length), so the kept-alive connection stays in sync.
        self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        try:
            if segments[0] == "api":
                self._api(segments[1:], query)
            elif self.command == "PUT" and segments[0] == "lfs":
                self._lfs_put(segments[1])
            else:
                self._git_or_resolve(segments)
        except Exception as error:  # answer every request, so that a server bug shows in the client's error
            status, code = (error.status, error.code) if isinstance(error, HubError) else (500, "InternalError")
            message = str(error) if isinstance(error, HubError) else f"{type(error).__name__}: {error}"
            headers = {"X-Error-Code": code, "X-Error-Message": message}
            self._send(status, json.dumps({"error": message}).encode(), headers)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # The routes.

    def _api(self, segments: list, query: dict):
        if segments == ["repos", "create"]:
            return self._create_repo()
        if segments == ["validate-yaml"]:
            return self._send_json({"errors": [], "warnings": []})
        if len(segments) < 3 or segments[0] not in REPO_TYPES:
            raise HubError(404, "NotFound", f"No API route for {self.path}")
        repo_type, repo_id = REPO_TYPES[segments[0]], "/".join(segments[1:3])
        repo = self.hub.repo(repo_type, repo_id)
        action, rest = (segments[3], segments[4:]) if len(segments) > 3 else ("revision", ["main"])
        if action == "revision" and self.command == "GET":
            sha = repo.resolve("/".join(rest))
            siblings = [{"rfilename": path} for path in repo.commits[sha]]
            return self._send_json({"id": repo_id, "sha": sha, "siblings": siblings, "private": False})
        if action == "tree" and self.command == "GET":
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            files = repo.commits[repo.resolve(rest[0])]
            return self._send_json(tree_entries(files, "/".join(rest[1:]), recursive))
        if action == "paths-info" and self.command == "POST":
            files = repo.commits[repo.resolve(rest[0])]
            paths = self._payload()["paths"]
            return self._send_json([entry for p in paths for entry in self._path_info(files, p)])
        if action == "preupload" and self.command == "POST":
            files = repo.commits[repo.resolve(rest[0])]
            return self._send_json({"files": [self._upload_mode(f, files) for f in self._payload()["files"]]})
        if action == "commit" and self.command == "POST":
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            sha = self.hub.commit(repo, rest[0], lines, query)
            commit_url = f"{self.hub.repo_url(repo_type, repo_id)}/commit/{sha}"
            return self._send_json({"commitUrl": commit_url, "commitOid": sha, "pullRequestUrl": None})
        if action in ("branch", "tag") and self.command == "POST":
            body = self._payload()
            name, start = (
                (rest[0], body.get("startingPoint", "main")) if action == "branch" else (body["tag"], rest[0])
            )
            with self.hub.lock:
                if name in repo.refs:
                    raise HubError(409, "Conflict", f"Reference {name} already exists")
                repo.refs[name] = repo.resolve(start)
            return self._send_json({})
        raise HubError(404, "NotFound", f"No API route for {self.command} {self.path}")

    def _create_repo(self):
        body = self._payload()
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, "BadRequest", f"Unsupported repo type {repo_type}")
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        created = self.hub.create_repo(repo_type, repo_id)
        url = self.hub.repo_url(repo_type, repo_id)
        self._send_json(
            {"url": url} if created else {"error": "You already created this repo", "url": url},
            status=200 if created else 409,
        )

    @staticmethod
    def _path_info(files: dict, path: str) -> list:
        if path in files:
            return [file_entry(path, files[path])]
        if any(p.startswith(path + "/") for p in files):
            return [folder_entry(path)]
        return []

    @staticmethod
    def _upload_mode(file: dict, files: dict) -> dict:
        """The preupload answer for one file, with the oid of the current version so unchanged files are skipped."""
        path, current = file["path"], files.get(file["path"])
        return {
            "path": path,
            "uploadMode": "lfs" if is_lfs(path, file["size"]) else "regular",
            "shouldIgnore": False,
            "oid": None if current is None else file_oid(path, current),
        }

    def _git_or_resolve(self, segments: list):
        repo_type = "dataset" if segments[0] == "datasets" else "model"
        segments = segments[1:] if repo_type == "dataset" else segments
        if len(segments) >= 2 and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
            self.hub.repo(repo_type, f"{segments[0]}/{segments[1][:-4]}")
            return self._lfs_batch()
        if len(segments) >= 5 and segments[2] == "resolve" and self.command in ("GET", "HEAD"):
            return self._resolve(repo_type, "/".join(segments[:2]), segments[3], "/".join(segments[4:]))
        raise HubError(404, "NotFound", f"No route for {self.command} {self.path}")

    def _lfs_batch(self):
        answer = []
        for obj in self._payload()["objects"]:
            if obj["oid"] not in self.hub.lfs_objects:
                obj = {**obj, "actions": {"upload": {"href": f"{self.hub.url}/lfs/{obj['oid']}"}}}
            answer.append(obj)
        self._send_json({"transfer": "basic", "objects": answer})

    def _lfs_put(self, oid: str):
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "BadRequest", "The uploaded content does not match its sha256")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = self.body
        self._send(200)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        repo = self.hub.repo(repo_type, repo_id)
        sha = repo.resolve(revision)
        if path not in repo.commits[sha]:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}")
        data = repo.commits[sha][path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{file_oid(path, data)}"'}
        self._send(200, data, headers, content_type="application/octet-stream")

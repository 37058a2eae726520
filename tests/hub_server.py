"""A Hub-compatible HTTP server for the tests: standard library only, a thread on 127.0.0.1.

It implements what the real ``huggingface_hub`` 2.x client calls when pushing and what
``from_pretrained`` calls when downloading, as read from the client's source
(``hf_api.py``, ``_commit_api.py``, ``lfs.py``, ``file_download.py``):

- ``POST /api/repos/create`` (409 when the repo exists, which ``exist_ok`` accepts)
- ``POST /api/models/{repo}/branch/{branch}``
- ``POST /api/validate-yaml`` (a README.md commit checks its metadata first)
- ``POST /api/models/{repo}/preupload/{rev}``: each file gets ``uploadMode`` "lfs" or "regular"
- ``POST /{repo}.git/info/lfs/objects/batch`` and ``PUT`` of the bytes to the returned href
- ``POST /api/models/{repo}/commit/{rev}``: ndjson lines ``header``, ``file`` (base64), ``lfsFile``
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit`` and ``ETag``; a missing
  file answers 404 with ``X-Error-Code: EntryNotFound`` as the Hub does
- ``GET /api/models/{repo}[/revision/{rev}]`` and ``/api/models/{repo}/tree/{rev}[/{path}]``

Every request is logged (method, path, headers) so a test can check the token was sent, and
``fail_next[name] = n`` makes the next ``n`` calls of an endpoint answer 500.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional
from urllib.parse import unquote, urlparse

LFS_THRESHOLD = 10_000  # bytes; bigger files (and weights) go through LFS, like the Hub's rules


class Repo:
    def __init__(self, repo_id: str, private: bool):
        self.repo_id = repo_id
        self.private = private
        self.commits: Dict[str, Dict[str, bytes]] = {}  # sha -> files
        self.branches: Dict[str, str] = {}  # name -> sha
        self.messages: Dict[str, str] = {}
        self._new_commit("main", {}, "initial commit")

    def _new_commit(self, branch: str, files: Dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(f"{self.repo_id}:{len(self.commits)}:{message}".encode()).hexdigest()
        self.commits[sha] = files
        self.branches[branch] = sha
        self.messages[sha] = message
        return sha

    def resolve(self, rev: str) -> Optional[str]:
        if rev in self.branches:
            return self.branches[rev]
        return rev if rev in self.commits else None


class HubState:
    def __init__(self):
        self.repos: Dict[str, Repo] = {}
        self.lfs: Dict[str, bytes] = {}
        self.log: List[dict] = []
        self.fail_next: Dict[str, int] = {}
        self.lock = threading.RLock()  # _route holds it while _should_fail takes it again


class Handler(BaseHTTPRequestHandler):
    state: HubState  # set on the subclass made per server
    base: str

    def log_message(self, *args):  # quiet: the test reads state.log instead
        pass

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body=b"", headers: Optional[dict] = None, content_type="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str):
        self._send(status, {"error": message}, headers={"X-Error-Code": code, "X-Error-Message": message})

    def _authorized(self, repo: Repo) -> bool:
        return not repo.private or self.headers.get("Authorization", "").startswith("Bearer ")

    def _repo(self, repo_id: str) -> Optional[Repo]:
        repo = self.state.repos.get(repo_id)
        if repo is None or not self._authorized(repo):
            self._error(404 if repo is None else 401, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        return repo

    def _should_fail(self, name: str) -> bool:
        with self.state.lock:
            if self.state.fail_next.get(name, 0) > 0:
                self.state.fail_next[name] -= 1
                return True
        return False

    def _handle(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        body = self._body() if self.command in ("POST", "PUT") else b""
        self.state.log.append({"method": self.command, "path": path, "query": url.query,
                               "headers": {k.lower(): v for k, v in self.headers.items()}})
        parts = path.strip("/").split("/")
        try:
            with self.state.lock:
                route = self._route(parts, body)
            if route is None:
                self._error(404, "NotFound", f"no route for {self.command} {path}")
        except Exception as err:  # a bug in the fake server must show up in the client's error
            self._error(500, "ServerError", f"{type(err).__name__}: {err}")

    do_GET = do_HEAD = do_POST = do_PUT = _handle

    # ------------------------------------------------------------------ routes
    def _route(self, parts: List[str], body: bytes):
        m = self.command
        if parts[:2] == ["api", "repos"] and parts[2:] == ["create"] and m == "POST":
            return self._create_repo(json.loads(body))
        if parts[:2] == ["api", "validate-yaml"] and m == "POST":
            text = json.loads(body).get("content", "")
            errors = [] if text.startswith("---\n") else [{"message": "no YAML metadata block"}]
            self._send(400 if errors else 200, {"errors": errors, "warnings": []})
            return True
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rest = parts[4:]
            if self._should_fail(rest[0] if rest else "info"):
                self._error(500, "ServerError", "Internal Error (injected by the test)")
                return True
            repo = self._repo(repo_id)
            if repo is None:
                return True
            if not rest or rest[0] == "revision":
                return self._info(repo, rest[1] if rest else "main")
            if rest[0] == "branch" and m == "POST":
                return self._branch(repo, rest[1], json.loads(body or b"{}"))
            if rest[0] == "preupload" and m == "POST":
                return self._preupload(repo, json.loads(body))
            if rest[0] == "commit" and m == "POST":
                return self._commit(repo, rest[1], body)
            if rest[0] == "tree" and m == "GET":
                return self._tree(repo, rest[1], "/".join(rest[2:]))
            return None
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            repo = self._repo(f"{parts[0]}/{parts[1][:-4]}")
            return True if repo is None else self._lfs_batch(json.loads(body))
        if parts[0] == "lfs-upload" and m == "PUT":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                self._error(400, "BadRequest", "sha256 mismatch")
                return True
            self.state.lfs[oid] = body
            self._send(200, b"")
            return True
        if len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
            repo = self._repo("/".join(parts[:2]))
            return True if repo is None else self._resolve(repo, parts[3], "/".join(parts[4:]))
        return None

    def _create_repo(self, payload):
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if repo_id in self.state.repos:
            self._send(409, {"error": "You already created this model repo", "url": f"{self.base}/{repo_id}"})
            return True
        self.state.repos[repo_id] = Repo(repo_id, payload.get("visibility") == "private")
        self._send(200, {"url": f"{self.base}/{repo_id}"})
        return True

    def _branch(self, repo: Repo, branch: str, payload):
        if branch in repo.branches:
            self._error(409, "Conflict", "Reference already exists")
            return True
        start = repo.resolve(payload.get("startingPoint") or "main")
        repo.branches[branch] = start
        self._send(200, {})
        return True

    def _info(self, repo: Repo, rev: str):
        sha = self._revision(repo, rev)
        if sha is None:
            return True
        files = repo.commits[sha]
        self._send(200, {"id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private,
                         "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [], "downloads": 0})
        return True

    def _revision(self, repo: Repo, rev: str):
        """The commit ``rev`` names, or None after answering 404 as the Hub does."""
        sha = repo.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    def _tree(self, repo: Repo, rev: str, folder: str):
        sha = self._revision(repo, rev)
        if sha is None:
            return True
        prefix = folder.rstrip("/") + "/" if folder else ""
        entries = [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                   for p, b in sorted(repo.commits[sha].items()) if p.startswith(prefix)]
        if folder and not entries:
            self._error(404, "EntryNotFound", f"{folder} does not exist on {rev}")
            return True
        self._send(200, entries)
        return True

    def _preupload(self, repo: Repo, payload):
        files = [{"path": f["path"], "shouldIgnore": False,
                  "uploadMode": "lfs" if f["size"] > LFS_THRESHOLD or f["path"].endswith((".safetensors", ".bin"))
                  else "regular"} for f in payload["files"]]
        self._send(200, {"files": files, "commitOid": repo.branches["main"]})
        return True

    def _lfs_batch(self, payload):
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {"upload": {"href": f"{self.base}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})
        return True

    def _commit(self, repo: Repo, rev: str, body: bytes):
        sha = self._revision(repo, rev)
        if sha is None:
            return True
        files = dict(repo.commits[sha])
        message = ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    return True
                files[value["path"]] = self.state.lfs[value["oid"]]
            elif item["key"] in ("deletedFile", "deletedFolder"):
                files = {p: b for p, b in files.items() if p != value["path"] and not p.startswith(value["path"] + "/")}
        new = repo._new_commit(rev, files, message)
        self._send(200, {"success": True, "commitOid": new, "commitUrl": f"{self.base}/{repo.repo_id}/commit/{new}"})
        return True

    def _resolve(self, repo: Repo, rev: str, path: str):
        sha = self._revision(repo, rev)
        if sha is None:
            return True
        data = repo.commits[sha].get(path)
        if data is None:
            self._error(404, "EntryNotFound", f"Entry not found: {path}")
            return True
        etag = hashlib.sha256(data).hexdigest() if len(data) > LFS_THRESHOLD else hashlib.sha1(data).hexdigest()
        self._send(200, data, headers={"X-Repo-Commit": sha, "ETag": f'"{etag}"'},
                   content_type="application/octet-stream")
        return True


class HubServer:
    """``with HubServer() as hub: ... hub.url ...``: a fresh, empty Hub on a free loopback port."""

    def __init__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        handler.base = self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def files(self, repo_id: str, rev: str = "main") -> Dict[str, bytes]:
        repo = self.state.repos[repo_id]
        return repo.commits[repo.resolve(rev)]

    def requests(self, method: Optional[str] = None, contains: str = "") -> List[dict]:
        return [r for r in self.state.log if (method is None or r["method"] == method) and contains in r["path"]]

"""A loopback HTTP server for download tests: enough of the Hugging Face Hub's HTTP API for
`huggingface_hub.snapshot_download` (repo info, the file tree, `resolve` with HEAD and ranged
GET), and plain files (official archives) with `Range` support and one-off interruptions."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Served:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # dataset id -> {path: bytes}
    files: dict[str, bytes] = field(default_factory=dict)  # /files/<name> -> bytes
    cut_after: dict[str, int] = field(default_factory=dict)  # name -> bytes sent before the next drop
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()


def _handler(served: Served):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _json(self, payload) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _missing(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()

        def _bytes(self, data: bytes, name: str, head: bool, extra: dict | None = None) -> None:
            start = 0
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged[6:].split("-")[0] or 0)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(206 if start else 200)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if head:
                return
            body = data[start:]
            cut = served.cut_after.pop(name, None)
            if cut is not None:  # a dropped connection mid-transfer
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _route(self, head: bool) -> None:
            url = urlparse(self.path)
            path = unquote(url.path)
            served.log.append((self.command, path, self.headers.get("Range")))
            parts = path.strip("/").split("/")
            if parts[0] == "files" and len(parts) == 2 and parts[1] in served.files:
                return self._bytes(served.files[parts[1]], parts[1], head)
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6:
                repo = f"{parts[2]}/{parts[3]}"
                if repo not in served.repos:
                    return self._missing()
                files = served.repos[repo]
                if parts[4] == "revision":
                    return self._json({"id": repo, "sha": served.commit(repo), "private": False,
                                       "siblings": [{"rfilename": p} for p in sorted(files)]})
                if parts[4] == "tree":
                    return self._json([{"type": "file", "path": p, "size": len(d),
                                        "oid": hashlib.sha1(d).hexdigest()} for p, d in sorted(files.items())])
            if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
                repo, file = f"{parts[1]}/{parts[2]}", "/".join(parts[5:])
                data = served.repos.get(repo, {}).get(file)
                if data is None:
                    return self._missing()
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                return self._bytes(data, f"{repo}/{file}", head,
                                   {"X-Repo-Commit": served.commit(repo), "ETag": etag})
            return self._missing()

        def do_GET(self):
            self._route(head=False)

        def do_HEAD(self):
            self._route(head=True)

    return Handler


class HubServer:
    """`with HubServer(served) as url:` serves `served` on 127.0.0.1 from a thread."""

    def __init__(self, served: Served):
        self.served = served
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

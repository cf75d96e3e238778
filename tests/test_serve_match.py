"""Why a result matched, and region search, on a real collection with local descriptors:
the match endpoint's inliers are the ``sp`` re-ranker's for the same pair, the page draws
them and shows that count, and a bbox search is the library's crop search."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_serve_page import CHROMIUM, CHROMIUM_ARGS, served

from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.loader import read_ilias
from ilias.query import QueryImage, Retriever
from ilias.rerank import SpatialRerank, verify_shortlist
from ilias.serve import ServeSettings, create_app
from ilias.types import LocalConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no Chromium to drive"),
]
LOCAL = LocalConfig(top_k_database=30, top_k_query=80)


@pytest.fixture(scope="module")
def local_store(tiny_ilias: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny benchmark with local descriptors, in an Edge store the server then owns."""
    folder = tmp_path_factory.mktemp("match_store")
    core = folder / "core"  # a copy, with a box for one positive (tiny's have none)
    shutil.copytree(tiny_ilias / "core", core)
    (core / "cat" / "pos" / "P000_bbox.txt").write_text("20 30 100 80\n")
    bench = read_ilias(core, tiny_ilias / "distractors")
    store = EdgeStore(folder / "qdrant")
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync", partition_size=6, local=LOCAL
    )
    roots = {"dataset": str(core), "distractors": str(tiny_ilias / "distractors")}
    assert load_collection(bench.database, store, "loc", options, metadata=roots).loaded == 17
    store.close()
    return f"edge:{folder / 'qdrant'}"


@pytest.fixture(scope="module")
def app_url(local_store: str) -> Iterator[tuple[object, str]]:
    app = create_app(ServeSettings(store=local_store, collection="loc"))
    with served(app) as url:
        yield app, url


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 860})
        yield context.new_page()
        browser.close()


def sp_inliers(app, query_local, candidate: str) -> int:
    """What the sp re-ranker computes for one pair (its own function and defaults)."""
    store = app.state.service.store
    stored = store.retrieve_local("loc", [candidate])[candidate]
    step = SpatialRerank()
    [checked] = verify_shortlist(
        query_local.descriptors, query_local.xy, [(stored.descriptors, stored.xy)],
        model=step.model, threshold=step.threshold, seed=step.seed,
    )  # fmt: skip
    return checked.inliers


def test_match_counts_the_inliers_sp_counts(app_url, tiny_ilias: Path) -> None:
    app, url = app_url
    import httpx

    query = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    retriever = Retriever(app.state.service.store, "loc")
    with httpx.Client(base_url=url, timeout=120) as client:
        hits = client.post(
            "/api/collections/loc/search/image",
            files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")},
            data={"query": json.dumps({"k": 5})},
        ).json()["hits"]
        _, local = retriever.encode_with_local([QueryImage(query)])
        seen = set()
        for hit in hits[:3]:
            answer = client.post(
                "/api/collections/loc/match/image",
                files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")},
                data={"query": json.dumps({"id": hit["id"]})},
            )
            assert answer.status_code == 200, answer.text
            match = answer.json()
            assert match["local"] and match["tentative"] == len(match["matches"])
            assert match["inliers"] == sum(m["inlier"] for m in match["matches"])
            assert match["inliers"] == sp_inliers(app, local[0], hit["id"])
            seen.add(match["inliers"])
        assert max(seen) > 0  # a real match among the top hits
        # a positive's payload box comes back to be drawn; a stored query point works too
        match = client.post(
            "/api/collections/loc/match", json={"id": "cat/pos/P000.jpg", "query_id": hits[1]["id"]}
        ).json()
        assert match["boxes"] == [[20.0, 30.0, 100.0, 80.0]]
        assert match["local"] and match["query_size"] is not None


def test_a_bbox_search_is_the_librarys_crop_search(app_url, tiny_ilias: Path) -> None:
    app, url = app_url
    import httpx

    query = tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg"
    box = [10, 12, 120, 90]
    expected = Retriever(app.state.service.store, "loc").search(QueryImage(query, box), k=10)
    with httpx.Client(base_url=url, timeout=120) as client:
        answer = client.post(
            "/api/collections/loc/search/image",
            files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")},
            data={"query": json.dumps({"k": 10, "bbox": box})},
        ).json()
        assert [h["id"] for h in answer["hits"]] == [h.id for h in expected]
        assert np.allclose([h["score"] for h in answer["hits"]], [h.score for h in expected])
        nothing = client.post(
            "/api/collections/loc/search",
            json={"id": answer["hits"][0]["id"], "bbox": [9000, 9000, 5, 5]},
        )
        assert nothing.status_code == 400 and "bbox" in nothing.json()["detail"]


def test_the_match_view_draws_the_lines_and_the_sp_count(page, app_url, tiny_ilias: Path) -> None:
    app, url = app_url
    query = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    page.goto(url)
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('ready')")
    assert (
        page.eval_on_selector_all("#rerank option", "os => os.filter(o => o.disabled).length") == 0
    )  # local descriptors: cs and sp offered
    page.set_input_files("#file", str(query))
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results li').length > 0")
    first = page.get_attribute("#results li:first-child .card", "data-id")
    page.click("#results li:first-child .card")
    page.wait_for_function("document.querySelector('#match-inliers')?.dataset.inliers !== ''")
    shown = int(page.get_attribute("#match-inliers", "data-inliers"))
    _, local = Retriever(app.state.service.store, "loc").encode_with_local([QueryImage(query)])
    assert shown == sp_inliers(app, local[0], first) and shown > 0
    page.wait_for_function(
        f"document.querySelectorAll('#match-lines line.inlier').length === {shown}"
    )
    assert page.locator("#match-lines line.outlier").count() > 0
    boxes = 1 if first == "cat/pos/P000.jpg" else 0  # the one positive with a box
    assert page.locator("#match-lines rect.gt").count() == boxes
    assert f"{shown} inliers of" in page.text_content("#match-summary")

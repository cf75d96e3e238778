"""Writes through ``ilias serve --writes``: a real service process over a real Edge
collection, the offline default encoder at a small resolution.

An image added through the service gets the vector a load of the same file gives; it is
found by a search, and gone after a delete; the API key guards writes as it guards
searches; a load refused because the service holds the collection names the endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from small_pictures import write
from typer.testing import CliRunner

from ilias import cli
from ilias.cli import app
from ilias.config import DEFAULT_ENCODER
from ilias.errors import CollectionBusy
from ilias.indexing import ExtractionOptions, load_collection, open_store
from ilias.loader import FILE_STAMP, open_dataset
from ilias.serve import ServeSettings, create_app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY = "write-secret"
OPTIONS = ExtractionOptions(DEFAULT_ENCODER, resolution=64, scheduler="sync")


def loaded(tmp_path: Path) -> tuple[str, Path]:
    folder = tmp_path / "photos"
    for i in range(6):
        write(folder, f"p{i}.jpg", seed=200 + i)
    spec = f"edge:{tmp_path / 'q'}"
    with open_store(spec) as store:
        load_collection(open_dataset(folder), store, "c", OPTIONS)
    return spec, folder


@contextmanager
def running_service(tmp_path: Path) -> Iterator[tuple[httpx.Client, str, Path]]:
    """``ilias serve --writes`` with an API key, on a free port, over a loaded collection;
    stopped (and the collection released) when the block ends."""
    spec, folder = loaded(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ILIAS_API_KEY": KEY,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "ilias", "serve", "--store", spec, "-c", "c", "--port", str(port),
         "--writes"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "ilias serve did not start in 90 s"
            time.sleep(0.2)
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as client:
            yield client, spec, folder
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[httpx.Client, str, Path]]:
    with running_service(tmp_path) as running:
        yield running


def add(client: httpx.Client, data: bytes | None = None, **form: str) -> httpx.Response:
    files = {"image": ("x.jpg", data, "image/jpeg")} if data is not None else None
    return client.post("/api/collections/c/images", files=files, data=form)


def search_image(client: httpx.Client, data: bytes, k: int = 10) -> list[tuple[str, float]]:
    answer = client.post(
        "/api/collections/c/search/image",
        files={"image": ("q.jpg", data, "image/jpeg")},
        data={"query": json.dumps({"k": k})},
    )
    assert answer.status_code == 200, answer.text
    return [(h["id"], h["score"]) for h in answer.json()["hits"]]


def test_added_images_are_found_then_gone_after_delete(service, monkeypatch):
    client, spec, folder = service
    p2 = (folder / "p2.jpg").read_bytes()
    keyless = httpx.post(f"{client.base_url}/api/collections/c/images",
                         files={"image": ("x.jpg", p2)}, data={"id": "a"})  # fmt: skip
    assert keyless.status_code == 401

    uploaded = add(client, p2, id="uploads/p2-copy.jpg", payload='{"instance": "shoe"}')
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json() == {"collection": "c", "id": "uploads/p2-copy.jpg", "points": 7}
    kept = add(client, p2, id="uploads/p2-kept.jpg")
    assert kept.status_code == 201 and kept.json()["points"] == 8
    write(folder, "late.jpg", seed=300)  # a new file in the dataset folder, added by path
    by_path = add(client, path="late.jpg")
    assert by_path.status_code == 201 and by_path.json()["id"] == "photos/late.jpg"

    hits = search_image(client, p2)
    top = {i for i, _ in hits[:3]}
    assert top == {"photos/p2.jpg", "uploads/p2-copy.jpg", "uploads/p2-kept.jpg"}
    assert max(s for _, s in hits[:3]) - min(s for _, s in hits[:3]) < 1e-5
    late = search_image(client, (folder / "late.jpg").read_bytes())
    assert late[0][0] == "photos/late.jpg"
    shoe = client.post("/api/collections/c/search", json={"id": "photos/p0.jpg", "k": 20,
                                                           "where": ["instance=shoe"]})  # fmt: skip
    assert [h["id"] for h in shoe.json()["hits"]] == ["uploads/p2-copy.jpg"]
    assert shoe.json()["hits"][0]["payload"]["instance"] == "shoe"

    refusals = {
        "both": add(client, p2, id="x", path="late.jpg"),
        "no id": add(client, p2),
        "reserved": add(client, p2, id="x", payload='{"id": "y"}'),
        "not json": add(client, p2, id="x", payload="{"),
        "outside": add(client, path="../../../etc/passwd"),
        "corrupt": add(client, b"not an image", id="x"),
    }
    statuses = {name: (r.status_code, r.json()["detail"]) for name, r in refusals.items()}
    assert {name: s for name, (s, _) in statuses.items()} == {
        "both": 400, "no id": 400, "reserved": 400, "not json": 400, "outside": 404,
        "corrupt": 400,
    }  # fmt: skip
    assert all("\n" not in detail for _, detail in statuses.values())

    gone = client.delete("/api/collections/c/points/uploads/p2-copy.jpg")
    assert gone.status_code == 200 and gone.json() == {"collection": "c", "deleted": 1, "points": 8}
    assert client.delete("/api/collections/c/points/uploads/p2-copy.jpg").status_code == 404
    assert "uploads/p2-copy.jpg" not in {i for i, _ in search_image(client, p2, k=20)}
    everything = client.post("/api/collections/c/points/delete", json={"where": ["role=image"]})
    assert everything.status_code == 400 and "pass --all" in everything.json()["detail"]
    nothing = client.post("/api/collections/c/points/delete", json={"where": ["instance=shoe"]})
    assert nothing.status_code == 400 and "matches no point" in nothing.json()["detail"]
    by_ids = client.post("/api/collections/c/points/delete", json={"ids": ["photos/late.jpg"]})
    assert by_ids.json() == {"collection": "c", "deleted": 1, "points": 7}

    # A load while the service holds the collection is refused, naming the way through it.
    monkeypatch.setattr(cli.console, "width", 250)
    refused = CliRunner().invoke(app, ["load", str(folder), "--store", spec, "-c", "c",
                                       "--resolution", "64", "--scheduler", "sync"])  # fmt: skip
    assert isinstance(refused.exception, CollectionBusy)
    assert "POST /api/collections/c/images" in str(refused.exception)


def test_an_uploaded_image_gets_the_vector_a_load_gives(tmp_path):
    """The same file loaded and uploaded: the same stored vector; and a file added by path
    carries a load's file stamp (a later sync sees it unchanged)."""
    with running_service(tmp_path) as (client, spec, folder):
        p4 = (folder / "p4.jpg").read_bytes()
        assert add(client, p4, id="uploads/p4.jpg").status_code == 201
        write(folder, "late.jpg", seed=301)
        assert add(client, path="late.jpg").status_code == 201
    with open_store(spec) as store:  # the service has stopped: the collection is free
        vectors = store.retrieve_vectors("c", ["photos/p4.jpg", "uploads/p4.jpg"])
        np.testing.assert_allclose(vectors["uploads/p4.jpg"], vectors["photos/p4.jpg"], atol=1e-6)
        stamp = store.stored_payloads("c", ["photos/late.jpg"], [FILE_STAMP])["photos/late.jpg"]
    stat = os.stat(folder / "late.jpg")
    assert stamp[FILE_STAMP] == f"{stat.st_size}:{stat.st_mtime_ns}"
    synced = CliRunner().invoke(app, ["load", str(folder), "--store", spec, "-c", "c", "--sync",
                                      "--resolution", "64", "--scheduler", "sync"])  # fmt: skip
    assert synced.exit_code == 0, synced.output
    # The upload has no file in the folder: a sync of the folder removes it, keeps the rest.
    assert "sync: 0 added, 0 changed (extracted again), 1 removed" in " ".join(
        synced.output.split()
    )


def test_writes_are_off_unless_asked(tmp_path):
    spec, folder = loaded(tmp_path)
    data = (folder / "p1.jpg").read_bytes()
    with TestClient(create_app(ServeSettings(store=spec, collection="c", api_key=None))) as client:
        answer = client.post("/api/collections/c/images", files={"image": ("x.jpg", data)},
                             data={"id": "x"})  # fmt: skip
        assert answer.status_code == 403 and "--writes" in answer.json()["detail"]
        assert client.delete("/api/collections/c/points/photos/p1.jpg").status_code == 403
        assert client.post("/api/collections/c/points/delete", json={"ids": ["photos/p1.jpg"]}
                           ).status_code == 403  # fmt: skip
        assert client.app.state.service.store.count("c") == 6  # type: ignore[attr-defined]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no Chromium: apt-get install chromium")
def test_the_page_adds_and_deletes_when_writes_are_on(tmp_path):
    """Headless Chromium on the real page: the add panel appears only with writes on; a
    chosen file becomes a point (prefix + file name) found by a search, and the delete
    form removes it after a confirmation."""
    sync_api = pytest.importorskip("playwright.sync_api")
    spec, _ = loaded(tmp_path)
    new = write(tmp_path / "incoming", "new.jpg", seed=400)
    errors: list[str] = []
    for writes in (False, True):
        app = create_app(ServeSettings(store=spec, collection="c", api_key=None, writes=writes))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.querySelector('#collection').value === 'c'")
                if not writes:
                    page.wait_for_timeout(300)
                    assert page.locator("#writes").is_hidden()
                    browser.close()
                    continue
                page.wait_for_selector("#writes", state="visible")
                page.set_input_files("#add-files", str(new))
                page.fill("#add-prefix", "incoming/")
                page.click("#add-button")
                page.wait_for_function("document.querySelector('#status').textContent"
                                       ".startsWith('added 1 image')")  # fmt: skip
                store = app.state.service.store
                assert store.existing_ids("c", ["incoming/new.jpg"]) == {"incoming/new.jpg"}
                page.on("dialog", lambda dialog: dialog.accept())
                page.fill("#delete-id", "incoming/new.jpg")
                page.click("#delete-button")
                page.wait_for_function("document.querySelector('#status').textContent"
                                       ".startsWith('deleted incoming/new.jpg')")  # fmt: skip
                assert store.existing_ids("c", ["incoming/new.jpg"]) == set()
                assert store.count("c") == 6 and not errors
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)

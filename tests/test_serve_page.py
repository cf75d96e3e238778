"""The web page in a real headless Chromium (Playwright) against a real uvicorn on loopback.

Upload a query image and see the grid; draw a box and get the region's hits; press Enter
on a stored id, with completion; errors that leave no old results; the busy state; hidden
controls; browse; no horizontal scroll on a phone; /docs offline; the evaluation explorer
with positives framed green, distractors red, the missed positives and two runs compared.
The match view (local descriptors) is in test_serve_match.py.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from test_serve import COLLECTION, build_runs  # the same collection and runs as the API tests

from ilias.serve import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
GREEN, RED = "rgb(26, 158, 58)", "rgb(208, 52, 44)"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="no Chromium to drive: apt-get install -y chromium (Playwright's own browser "
        "download does not work offline)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def built(tiny_ilias: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return build_runs(tiny_ilias, tmp_path_factory.mktemp("serve_page"))


@contextmanager
def served(app) -> Iterator[str]:
    """``app`` under a real uvicorn in a thread, on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def base_url(built: tuple[str, Path]) -> Iterator[str]:
    """The tiny collection and two runs, served with no API key."""
    store, runs = built
    with served(create_app(ServeSettings(store=store, collection=COLLECTION, runs=runs))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == []  # no script error on the page


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a test's picture goes (to look at when it fails); the README's pictures are of
    the demo collection, taken by bench/page.py."""
    return tmp_path / name


def ready(page, base_url: str) -> None:
    """The page loaded, its collection chosen and the collection's abilities known."""
    page.goto(base_url)
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('ready')")


def test_upload_see_the_grid_and_click_a_result(
    page, base_url: str, tiny_ilias: Path, tmp_path: Path
) -> None:
    ready(page, base_url)
    assert page.input_value("#collection") == COLLECTION
    page.fill("#k", "12")
    page.set_input_files("#file", str(tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"))
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results li').length === 12")
    assert page.text_content("#query-label") == "Query: uploaded Q000.jpg"
    first = page.get_attribute("#results li:first-child .card", "data-id")
    assert first is not None and first.startswith("cat/pos/")
    assert "decode" in page.text_content("#timings")
    # thumbnails loaded (natural size known), letterboxed; the role is a badge
    page.wait_for_function(
        "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)"
    )
    fit = page.eval_on_selector("#results img", "e => getComputedStyle(e).objectFit")
    assert fit == "contain"
    assert page.text_content("#results li:first-child .badge") == "positive"
    page.wait_for_function("document.querySelector('#timings').textContent.includes('first')")
    page.screenshot(path=str(screenshot_path(tmp_path, "serve-search.png")), full_page=True)

    # "search with it": a new search with its stored vector, the chosen image first
    clicked = page.get_attribute("#results li:nth-child(3) .card", "data-id")
    page.click("#results li:nth-child(3) .again")
    page.wait_for_function(
        f"document.querySelector('#query-label')?.textContent === 'Query: stored {clicked}'"
    )
    page.wait_for_function(
        f"document.querySelector('#results li:first-child .card').dataset.id === '{clicked}'"
    )


def test_a_dropped_image_is_searched(page, base_url: str, tiny_ilias: Path) -> None:
    import base64

    ready(page, base_url)
    data = (tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg").read_bytes()
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dropped = new DataTransfer();
            dropped.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
        }""",
        base64.b64encode(data).decode(),
    )
    page.wait_for_function(
        "document.querySelector('#query-label')?.textContent === 'Query: uploaded dropped.jpg'"
    )
    page.wait_for_function(
        "document.querySelector('#results li:first-child .card')?.dataset.id"
        "?.startsWith('rocket/pos/')"
    )


def test_enter_on_a_stored_id_searches(page, base_url: str) -> None:
    ready(page, base_url)
    page.focus("#stored-id")
    page.keyboard.type("rocket/pos/P001.jpg")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "document.querySelector('#results li:first-child .card')?.dataset.id === "
        "'rocket/pos/P001.jpg'"
    )


def test_an_error_after_a_search_leaves_no_old_results(page, base_url: str) -> None:
    """Each failure replaces what was on screen: no old grid, no old "Query:" label, and a
    sentence that says what to do."""
    ready(page, base_url)
    page.fill("#stored-id", "cat/pos/P000.jpg")
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results li').length > 10")
    assert page.locator("#query-label").count() == 1

    page.fill("#stored-id", "no/such.jpg")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")
    assert page.text_content("#status") == (
        'No image with id "no/such.jpg" in tiny: type the start of an id and pick a '
        "suggestion, or find one under Browse."
    )
    assert page.locator("#results li").count() == 0
    assert page.locator("#query-label").count() == 0
    assert page.text_content("#timings") == ""

    # k out of range: a message in words, not the browser's bubble, and still no old grid
    page.fill("#stored-id", "cat/pos/P000.jpg")
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results li').length > 10")
    page.fill("#k", "5000")
    page.click("#search-button")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")
    assert "give a whole number from 1 to 1000" in page.text_content("#status")
    assert page.locator("#results li").count() == 0


def test_a_search_in_flight_shows_it(page, base_url: str) -> None:
    """While a request is out: a spinner, the Search button disabled, the seconds counting."""
    ready(page, base_url)
    held = []
    page.route("**/search", lambda route: held.append(route))
    page.fill("#stored-id", "cat/pos/P000.jpg")
    page.click("#search-button")
    page.wait_for_function("document.querySelector('#search-button').disabled")
    assert page.is_visible("#spinner")
    page.wait_for_function(
        "/searching\\.\\.\\. [0-9.]+ s/.test(document.querySelector('#status').textContent)"
    )
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_function("document.querySelectorAll('#results li').length > 10")
    assert not page.is_disabled("#search-button")
    assert not page.is_visible("#spinner")


def test_controls_that_cannot_work_are_hidden_with_the_reason(page, base_url: str) -> None:
    """The tiny collection's EfficientNet has no text tower and no local descriptors are
    stored: no text box, cs and sp disabled, and the reasons on the page."""
    ready(page, base_url)
    assert not page.is_visible("#text")
    info = page.text_content("#collection-info")
    assert "no text search" in info and "no cs/sp re-ranking" in info
    disabled = page.eval_on_selector_all(
        "#rerank option", "os => os.filter(o => o.disabled).map(o => o.value)"
    )
    assert disabled == ["cs", "sp"]
    # the API refuses a text query in the same words, naming no module
    answer = page.request.post(
        f"{base_url}/api/collections/{COLLECTION}/search", data={"text": "a cat"}
    )
    assert answer.status == 400
    detail = answer.json()["detail"]
    assert "reads images only" in detail and "ilias." not in detail


def test_stored_ids_complete_from_the_collection(page, base_url: str) -> None:
    ready(page, base_url)
    assert page.get_attribute("#stored-id", "placeholder").startswith("e.g. cat/")
    page.focus("#stored-id")
    page.keyboard.type("rocket/p")
    page.wait_for_function(
        "[...document.querySelectorAll('#id-suggestions option')].length > 0 && "
        "[...document.querySelectorAll('#id-suggestions option')]"
        ".every(o => o.value.startsWith('rocket/p'))"
    )
    values = page.eval_on_selector_all("#id-suggestions option", "os => os.map(o => o.value)")
    assert values == sorted(values) and "rocket/pos/P000.jpg" in values


def test_a_drawn_box_searches_that_region(page, base_url: str, tiny_ilias: Path) -> None:
    """Drag on the query image: the box shows, the search runs on that region, and its hits
    are the API's for the same bbox (the crop of the CLI's --bbox)."""
    import json

    query = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    ready(page, base_url)
    page.set_input_files("#file", str(query))
    page.click("#search-button")
    page.wait_for_function("document.querySelector('#query-label')?.textContent.endsWith('.jpg')")
    stage = page.locator("#query-image").bounding_box()
    assert stage is not None
    x0, y0 = stage["x"] + stage["width"] * 0.2, stage["y"] + stage["height"] * 0.25
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + stage["width"] * 0.3, y0 + stage["height"] * 0.2, steps=5)
    page.mouse.move(x0 + stage["width"] * 0.5, y0 + stage["height"] * 0.45, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "document.querySelector('#query-label')?.textContent.includes('region')"
        " && document.querySelectorAll('#results li').length > 0"
    )
    box = page.evaluate("state.box")
    assert len(box) == 4 and box[2] > 10 and box[3] > 10
    assert page.is_visible("#box")
    shown = page.eval_on_selector_all("#results .card", "cs => cs.map(c => c.dataset.id)")
    answer = page.request.post(
        f"{base_url}/api/collections/{COLLECTION}/search/image",
        multipart={
            "image": {"name": "Q000.jpg", "mimeType": "image/jpeg", "buffer": query.read_bytes()},
            "query": json.dumps({"k": 20, "bbox": box}),
        },
    )
    assert answer.ok, answer.text()
    assert shown == [h["id"] for h in answer.json()["hits"]]
    whole = page.request.post(
        f"{base_url}/api/collections/{COLLECTION}/search/image",
        multipart={
            "image": {"name": "Q000.jpg", "mimeType": "image/jpeg", "buffer": query.read_bytes()},
            "query": json.dumps({"k": 20}),
        },
    )
    scores = page.eval_on_selector_all("#results .score", "ss => ss.map(s => s.textContent)")
    assert scores != [f"{h['score']:.3f}" for h in whole.json()["hits"]]  # not the whole image

    # move the box by its middle: a new region, searched again
    middle = page.locator("#box").bounding_box()
    assert middle is not None
    page.mouse.move(middle["x"] + middle["width"] / 2, middle["y"] + middle["height"] / 2)
    page.mouse.down()
    page.mouse.move(
        middle["x"] + middle["width"] / 2 - 15, middle["y"] + middle["height"] / 2 - 10, steps=4
    )
    page.mouse.up()
    page.wait_for_function(f"state.box[0] !== {box[0]} && state.searched?.box === state.box")


OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('body *')].filter((e) => {
        if (!e.getClientRects().length || e.closest('.table-wrap, .queries')) return false;
        return e.getBoundingClientRect().right > width + 1;
    });
    return [document.documentElement.scrollWidth, width,
            wide.slice(0, 5).map((e) => e.id || e.className || e.tagName)];
}"""


def test_no_horizontal_scroll_on_a_phone(browser, base_url: str, tmp_path: Path) -> None:
    """At 390 px wide, search (with results), browse and the explorer fit the screen: the
    document is no wider than the viewport and no visible element sticks out."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    ready(page, base_url)
    page.fill("#stored-id", "cat/pos/P000.jpg")
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results li').length > 10")
    scroll, width, wide = page.evaluate(OVERFLOW)
    assert (scroll, wide) == (width, []), "search"
    page.screenshot(path=str(screenshot_path(tmp_path, "serve-phone.png")))
    page.click("#tab-browse")
    page.wait_for_function("document.querySelectorAll('#browse li').length > 10")
    scroll, width, wide = page.evaluate(OVERFLOW)
    assert (scroll, wide) == (width, []), "browse"
    page.click("#tab-explorer")
    page.select_option("#run-b", "restricted")
    page.wait_for_function("document.querySelectorAll('#comparison circle').length === 3")
    page.wait_for_function("document.querySelectorAll('#ranked li').length > 0")
    scroll, width, wide = page.evaluate(OVERFLOW)
    assert (scroll, wide) == (width, []), "explorer"
    context.close()


def test_browse_pages_and_searches_with_a_chosen_image(page, base_url: str) -> None:
    ready(page, base_url)
    page.click("#tab-browse")
    page.fill("#browse-prefix", "coffee/")
    page.wait_for_function("document.querySelector('#browse-count').textContent === '1-3 of 3'")
    ids = page.eval_on_selector_all("#browse .card", "cs => cs.map(c => c.dataset.id)")
    assert ids == ["coffee/pos/P000.jpg", "coffee/pos/P001.jpg", "coffee/pos/P002.jpg"]
    page.fill("#browse-prefix", "")
    page.wait_for_function("document.querySelector('#browse-count').textContent === '1-17 of 17'")
    # filtered by a payload field: the roles the collection stores
    roles = page.eval_on_selector_all("#browse-role option", "os => os.map(o => o.value)")
    assert roles == ["", "distractor", "positive"]
    page.select_option("#browse-role", "positive")
    page.wait_for_function("document.querySelector('#browse-count').textContent === '1-9 of 9'")
    page.select_option("#browse-role", "")
    page.wait_for_function("document.querySelector('#browse-count').textContent === '1-17 of 17'")
    page.click("#browse li:nth-child(5) .card")
    chosen = ids = page.eval_on_selector_all("#browse .card", "cs => cs.map(c => c.dataset.id)")[4]
    page.wait_for_function(
        f"document.querySelector('#query-label')?.textContent === 'Query: stored {chosen}'"
    )
    assert page.is_visible("#view-search") and page.is_visible("#query-image")


def test_the_docs_work_offline(browser, base_url: str) -> None:
    """/docs and /redoc render with every request off this machine refused: their scripts
    come from the service (the fastapi-offline package), not a CDN."""
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            outside.append(route.request.resource_type)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "ps => ps.map(p => p.textContent)")
    assert "/api/collections/{collection}/search" in "".join(paths).replace("\u200b", "")
    page.goto(f"{base_url}/redoc")
    page.wait_for_function(
        "document.body.innerText.includes('/api/collections/{collection}/search')"
    )
    # nothing the pages need comes from outside (Redoc's footer asks for its logo only)
    assert set(outside) <= {"image"}
    context.close()


def test_the_evaluation_explorer_frames_positives_and_compares_runs(
    page, base_url: str, tmp_path: Path
) -> None:
    page.goto(base_url)
    page.click("#tab-explorer")
    page.wait_for_function("document.querySelectorAll('#query-list button').length === 3")
    page.select_option("#run-a", "restricted")
    # lowest AP first: rocket, whose positives the restricted run filtered out
    page.wait_for_function(
        "document.querySelector('#query-list button')?.dataset.query === 'rocket/query/Q000.jpg'"
        " && document.querySelector('#query-detail h2')?.textContent === 'rocket/query/Q000.jpg'"
    )
    assert page.locator("#missed li").count() == 3  # its three positives, missed
    page.click("#query-list li:nth-child(2) button")  # a query with its positives found
    page.wait_for_function(
        "document.querySelector('#query-detail h2')?.textContent !== 'rocket/query/Q000.jpg'"
    )
    page.wait_for_function("document.querySelectorAll('#ranked .card.positive').length === 3")
    assert page.locator("#ranked .card.distractor").count() > 0
    green = page.eval_on_selector("#ranked .card.positive", "e => getComputedStyle(e).borderColor")
    red = page.eval_on_selector("#ranked .card.distractor", "e => getComputedStyle(e).borderColor")
    assert (green, red) == (GREEN, RED)
    assert page.text_content("#query-detail").count("AP 100.0 (0-100)") == 1
    page.select_option("#run-b", "base")
    page.wait_for_function("document.querySelectorAll('#comparison circle').length === 3")
    first_row = page.text_content("#comparison table tr:nth-child(3) td:first-child")
    assert first_row == "rocket/query/Q000.jpg"
    page.wait_for_function(
        "[...document.querySelectorAll('#query-detail img')]"
        ".every(i => i.complete && i.naturalWidth)"
    )
    page.screenshot(path=str(screenshot_path(tmp_path, "serve-explorer.png")), full_page=True)

    # an evaluation query searched from the explorer starts from its ground-truth box
    shown = page.text_content("#query-detail h2")
    page.click("#search-query")
    page.wait_for_function(
        "document.querySelector('#query-label')?.textContent.includes('region')"
        " && document.querySelectorAll('#results li').length > 0"
    )
    name = shown.split("/")[-1]
    label = page.text_content("#query-label")
    assert label.startswith(f"Query: uploaded {name} + region 0, 0, ")
    assert page.is_visible("#box") and page.is_visible("#view-search")


def test_the_page_trades_the_key_for_a_cookie_and_puts_it_in_no_url(
    browser, built: tuple[str, Path], tiny_ilias: Path, tmp_path: Path
) -> None:
    """With ILIAS_API_KEY set, the page asks for the key once, trades it for the session
    cookie and then searches and shows thumbnails: no request URL carries the key, and
    the page keeps it nowhere (a copy of the store: the module's server owns the original)."""
    key = "page-key-5e1d"
    shutil.copytree(Path(built[0].removeprefix("edge:")), tmp_path / "q")
    settings = ServeSettings(store=f"edge:{tmp_path / 'q'}", collection=COLLECTION, api_key=key)
    with served(create_app(settings)) as url:
        context = browser.new_context(viewport={"width": 1366, "height": 860})
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url)
        page.wait_for_function("document.querySelector('#status').textContent.includes('API key')")
        assert page.is_visible("#api-key")  # asked for only now that the service wants one
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.querySelector('#collection').options.length > 0")
        page.fill("#stored-id", "cat/pos/P000.jpg")
        page.click("#search-button")
        page.wait_for_function("document.querySelectorAll('#results li').length > 0")
        page.wait_for_function(
            "[...document.querySelectorAll('#results img')]"
            ".every(i => i.complete && i.naturalWidth)"
        )
        assert page.input_value("#api-key") == ""
        assert page.evaluate("sessionStorage.length + localStorage.length") == 0
        assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by scripts
        cookies = context.cookies()
        assert [c["name"] for c in cookies] == ["ilias_session"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        assert any("/thumbnail?id=" in u for u in requested)
        assert not any(key in u or "api_key" in u for u in requested)
        context.close()

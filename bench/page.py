"""The web page as a person uses it, timed and photographed, in headless Chromium.

Against a running ``ilias serve``: uploads a query image and measures, warm, the time from
the Search click to the first painted result (the page's own measurement: the click to the
frame after the first result's thumbnail loaded, shown under the results). With
``--screenshots DIR`` it also writes the README's pictures: a region search, the match
view of the first result, the evaluation explorer (two runs compared) and the search on a
390 px phone.

    ilias serve --store edge:PATH -c COLLECTION --runs RUNS --port 8765 &
    python bench/page.py --url http://127.0.0.1:8765 --image Q.jpg --box 10,20,200,150
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOWN = "document.querySelector('#timings').textContent.includes('first result shown')"


def ready(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(
        "document.querySelector('#status').textContent.startsWith('ready')", timeout=120_000
    )


def search_and_time(page: Page) -> float:
    """One Search click on the chosen upload; the page's click-to-first-paint in ms."""
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results li').length === 0")
    page.wait_for_function(SHOWN, timeout=60_000)
    return float(page.evaluate("state.firstPaintMs"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--image", type=Path, required=True, help="the query image to upload")
    parser.add_argument("--repeat", type=int, default=10, help="timed searches after a warm-up")
    parser.add_argument("--box", help="x,y,w,h: the region drawn for the screenshots")
    parser.add_argument("--screenshots", type=Path, help="write the README's pictures here")
    options = parser.parse_args()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 860})
        ready(page, options.url)
        page.fill("#k", "20")
        page.set_input_files("#file", str(options.image))
        search_and_time(page)  # warm-up: thumbnails cached, encoder and store warm
        times = []
        for _ in range(options.repeat):
            page.evaluate("state.searched = null")  # a plain search, no region
            times.append(search_and_time(page))
            time.sleep(0.2)
        times.sort()
        print(
            f"click to first painted result, upload {options.image.name}, warm, "
            f"{len(times)} searches: median {statistics.median(times):.0f} ms, "
            f"min {times[0]:.0f} ms, max {times[-1]:.0f} ms"
        )
        print("service stages of the last:", page.text_content("#timings"))
        if options.screenshots:
            shoot(page, browser, options)
        browser.close()


def shoot(page: Page, browser, options: argparse.Namespace) -> None:
    out = options.screenshots
    out.mkdir(parents=True, exist_ok=True)
    if options.box:
        box = [int(v) for v in options.box.split(",")]
        page.evaluate(f"setBox({box})")
        page.evaluate("state.searched = {}; search()")
        page.wait_for_function(
            "document.querySelector('#query-label')?.textContent.includes('region')"
        )
        page.wait_for_function(SHOWN, timeout=60_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#results img')].slice(0, 12).every(i => i.complete)"
    )
    page.screenshot(path=str(out / "serve-search.png"))
    positive = page.locator("#results li:has(.role-positive) .card")
    (positive.first if positive.count() else page.locator("#results .card").first).click()
    page.wait_for_function("document.querySelector('#match-inliers')", timeout=60_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(out / "serve-match.png"))
    page.click("#match-close")
    page.click("#tab-explorer")
    page.wait_for_function("document.querySelectorAll('#run-a option').length > 1")
    page.fill("#run-k", "12")  # two rows of cards: the comparison stays in the picture
    runs = page.eval_on_selector_all("#run-a option", "os => os.map(o => o.value)")
    page.select_option("#run-a", runs[0])
    page.select_option("#run-b", runs[1])
    page.wait_for_function("document.querySelectorAll('#comparison circle').length > 0")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "serve-explorer.png"), full_page=True)

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    ready(phone, options.url)
    phone.set_input_files("#file", str(options.image))
    search_and_time(phone)
    phone.wait_for_timeout(800)
    phone.screenshot(path=str(out / "serve-phone.png"))
    phone.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()

"""`ccr serve`: the local search page, driven in headless Chromium (Debian's chromium + chromedriver,
installed here when missing), its JSON API, and no file outside the index reachable through it."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from search_support import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    bundle_of,
    copy_images,
    ensure_chromium,
    french_queries,
)
from workflow_run import CCR

from ccr.search.gallery import index_images, open_index

SECRET = "top secret: never served"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, target: str) -> tuple[int, bytes, str]:
    """GET ``target`` exactly as written (no client-side normalisation of ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("content-type", "")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(search_reference, tmp_path_factory):
    """An index of the 24 test images (next to a secret file) served by `ccr serve` on a free port."""
    root = tmp_path_factory.mktemp("serve")
    photos = copy_images(search_reference, root / "photos")
    (root / "secret.txt").write_text(SECRET)
    (root / "photos" / "secret.txt").write_text(SECRET)
    index_images(bundle_of(search_reference), root / "photos", root / "idx")
    port = free_port()
    log = open(root / "serve.log", "w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([CCR, "serve", "--index", str(root / "idx"), "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            if get(port, "/")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"ccr serve did not start: {(root / 'serve.log').read_text()[-3000:]}")
        time.sleep(0.3)
    yield {"port": port, "root": root, "photos": photos, "index": root / "idx"}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_no_path_outside_the_index_is_served(site):
    port = site["port"]
    index, _ = open_index(site["index"])
    # row 0 is served, and is the file the index holds
    status, body, kind = get(port, "/image/0")
    assert status == 200 and body == Path(index.paths[0]).read_bytes()
    status, body, kind = get(port, "/thumb/0")
    assert status == 200 and kind == "image/jpeg" and body[:2] == b"\xff\xd8"
    secret = str(site["root"] / "secret.txt")
    attempts = [
        "/thumb/../../../../etc/passwd", "/image/../secret.txt", "/image/..%2Fsecret.txt",
        "/image/%2E%2E/%2E%2E/secret.txt", "/thumb/..%2F..%2F..%2Fetc%2Fpasswd", "/image/-1", "/image/24",
        "/image/99999999999999999999", "/thumb/0x1", "/image/0/../../secret.txt", "/image/" + urllib.parse.quote(secret,
                                                                                                          safe=""),
        "/image?path=" + urllib.parse.quote(secret), "/photos/secret.txt", "/secret.txt", "//etc/passwd",
        "/static/../secret.txt", "/thumb/%00", "/image/0%2F..%2F..%2Fsecret.txt",
    ]
    for target in attempts:
        status, body, _ = get(port, target)
        assert status in (400, 404), (target, status)
        assert SECRET.encode() not in body and b"root:" not in body, target
    # a search without a query is a client error, not a crash
    assert get(port, "/api/search?q=")[0] == 400


@pytest.mark.slow
def test_search_api_returns_the_cli_json_shape(site, search_reference):
    query = french_queries(search_reference)[0]["text"]
    status, body, kind = get(site["port"], "/api/search?k=4&q=" + urllib.parse.quote(query))
    assert status == 200 and kind.startswith("application/json")
    out = json.loads(body)
    assert out[0]["query"] == query and [r["rank"] for r in out[0]["results"]] == [1, 2, 3, 4]
    assert {r["path"] for r in out[0]["results"]} <= {str(p.resolve()) for p in site["photos"].values()}


@pytest.mark.slow
def test_search_page_in_headless_chromium(site, search_reference, tmp_path):
    why = ensure_chromium()
    if why:
        pytest.skip(f"no headless Chromium: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    queries = {q["image_id"]: q["text"] for q in french_queries(search_reference)}
    image_id = sorted(queries)[3]
    query, expected = queries[image_id], str(site["photos"][image_id].resolve())

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    started = time.monotonic()
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{site['port']}/")
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys(query)
        driver.find_element(By.ID, "go").click()

        def thumbnails_loaded(d):
            imgs = d.find_elements(By.CSS_SELECTOR, "figure.hit img.thumb")
            done = imgs and d.execute_script(
                "return Array.from(document.querySelectorAll('figure.hit img.thumb'))"
                ".every(i => i.complete && i.naturalWidth > 0)")
            return imgs if done else False

        thumbs = WebDriverWait(driver, 30).until(thumbnails_loaded)
        shown = [t.get_attribute("data-path") for t in thumbs]
        assert driver.find_element(By.ID, "q").get_attribute("value") == query
        assert expected in shown[:10], (query, expected, shown)
        assert len(shown) == 20 and len(driver.find_elements(By.CSS_SELECTOR, "figure.hit .score")) == 20
        shot = tmp_path / "search-page.png"
        driver.set_window_size(1280, 900)
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    took = time.monotonic() - started
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CCR_SCREENSHOT_DIR"):
        Path(os.environ["CCR_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(os.environ["CCR_SCREENSHOT_DIR"]) / "search-page.png")
    print(f"\nbrowser test: query {query!r} -> {expected} at rank {shown.index(expected) + 1}; {took:.1f} s; "
          f"screenshot {shot}")
    assert took < 60

"""The built site under test: `pytest tests/browser --site _build/html` (make browser-test builds it first)."""
import functools
import http.server
import threading
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--site", help="the built HTML book to test (e.g. _build/html)")


@pytest.fixture(scope="session")
def site(request) -> Path:
    option = request.config.getoption("--site")
    if not option:
        pytest.skip("browser tests need --site PATH to a built book (make browser-test)")
    root = Path(option)
    if not (root / "index.html").is_file():
        pytest.fail(f"{root}/index.html not found: build the book first (make book)")
    return root


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def base_url(site):
    """The site served on a free localhost port for the session."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Debian's headless Chromium through its chromedriver, with the browser console log readable and no
    background traffic (the machine has no internet)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1280,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()

"""The built book in a real browser: every page loads without console errors, the figures, animations, widgets
and equations are there, and every internal link resolves (issue 8)."""
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

NOTEBOOK_PAGES = {  # page -> what it must show
    "notebooks/00_edm_core.html": {"figures": 1},
    "notebooks/01_data.html": {"figures": 2, "animations": 1},
    "notebooks/02_training.html": {"figures": 2, "animations": 1},
    "notebooks/03_pseudo_video.html": {"figures": 3, "widgets": 1},
    "notebooks/04_ablation_ti.html": {"figures": 2},
    "notebooks/05_evaluation.html": {"figures": 1, "animations": 1},
    "notebooks/06_generate.html": {"figures": 1, "animations": 1},
    "notebooks/07_benchmarks.html": {"figures": 2},
    "book/method.html": {"equations": 4},
}


def pages(site: Path) -> list[str]:
    skip = ("_static", "_sources", "_images")
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if not str(p.relative_to(site)).startswith(skip))


class Links(HTMLParser):
    """The hrefs, srcs and element ids of one page."""

    def __init__(self):
        super().__init__()
        self.targets, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.targets.append(attrs[key])


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def test_the_site_has_every_chapter(site):
    assert set(NOTEBOOK_PAGES) <= set(pages(site))


def test_every_internal_link_and_anchor_resolves(site):
    broken = []
    for page in pages(site):
        here = site / page
        for target in parse(here).targets:
            if re.match(r"^[a-z]+:", target) or target.startswith("//"):
                continue  # external (http:, mailto:, data:, javascript:): checked by no one offline
            parts = urlsplit(target)
            path, fragment = unquote(parts.path), unquote(parts.fragment)
            resolved = (here.parent / path).resolve() if path else here
            if not resolved.exists():
                broken.append(f"{page}: {target}")
            elif fragment and resolved.suffix == ".html" and fragment not in parse(resolved).ids:
                broken.append(f"{page}: {target} (no id {fragment!r})")
    assert not broken, "\n".join(broken)


def test_no_page_loads_anything_from_the_internet(site):
    remote = [f"{page}: {t}" for page in pages(site) for t in parse(site / page).targets
              if re.match(r"^(https?:)?//", t) and t.endswith((".js", ".css", ".woff", ".woff2"))]
    assert not remote, "\n".join(remote)


def console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_every_page_loads_without_console_errors(site, base_url, browser):
    failures = {}
    for page in pages(site):
        browser.get(f"{base_url}/{page}")
        browser.execute_script("return document.readyState")
        errors = console_errors(browser)
        if errors:
            failures[page] = errors
    assert not failures, failures


@pytest.mark.parametrize("page", sorted(NOTEBOOK_PAGES))
def test_figures_animations_widgets_and_equations_render(site, base_url, browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    expected = NOTEBOOK_PAGES[page]
    browser.get(f"{base_url}/{page}")
    wait = WebDriverWait(browser, 30)
    images = browser.find_elements(By.CSS_SELECTOR, "article img")
    loaded = [img for img in images if browser.execute_script("return arguments[0].naturalWidth", img) > 0]
    assert len(loaded) >= expected["figures"] if "figures" in expected else True, (page, len(loaded))
    if "animations" in expected:  # matplotlib's to_jshtml: a player whose frames are embedded in the page
        players = browser.find_elements(By.CSS_SELECTOR, "div.animation")
        assert len(players) >= expected["animations"], page
        frame = players[0].find_element(By.TAG_NAME, "img")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", frame) > 0)
    if "widgets" in expected:  # the embedded widget state, rendered by the locally served widget manager
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".widget-slider, .jupyter-widgets.widget-inline-hbox"))
    if "equations" in expected:  # MathJax, served locally, typesets the page's display equations
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "mjx-container")) >= expected["equations"])
    assert not console_errors(browser), page

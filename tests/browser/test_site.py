"""The built book in a real browser: every page loads without console errors, the figures, animations and
equations are there and move, every figure has a caption, tables are tables, titles carry no raw TeX, no page is
empty, and every link resolves or is a well-formed address."""
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

NOTEBOOK_PAGES = {  # page -> what it must show
    "notebooks/00_edm_core.html": {"figures": 1},
    "notebooks/01_data.html": {"figures": 2, "animations": 1},
    "notebooks/02_training.html": {"figures": 2, "animations": 1},
    "notebooks/03_pseudo_video.html": {"figures": 3, "animations": 2},
    "notebooks/04_ablation_ti.html": {"figures": 2},
    "notebooks/05_evaluation.html": {"figures": 1, "animations": 2},  # one dataset: Fig. 2 and Fig. 1
    "notebooks/06_generate.html": {"figures": 1, "animations": 1},
    "notebooks/07_benchmarks.html": {"figures": 2},
    "book/intro.html": {"figures": 1, "animations": 1},  # the landing page: one still and its player
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


def test_the_site_root_serves_a_favicon(site):
    # The root index.html is a redirect without an icon link: a browser asks for /favicon.ico (a console error
    # when it is missing, raced against the redirect).
    assert (site / "favicon.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"


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
    if "equations" in expected:  # MathJax, served locally, typesets the page's display equations
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "mjx-container")) >= expected["equations"])
    assert not console_errors(browser), page


class PageText(HTMLParser):
    """Text by where it sits: the <title>, navigation (<nav> elements), paragraphs, and the article body."""

    def __init__(self):
        super().__init__()
        self.title, self.nav, self.paragraphs, self.article = "", [], [], []
        self.open = []  # tags whose text is being collected: "title", "nav", "p", "article"

    def handle_starttag(self, tag, attrs):
        if tag in ("title", "nav", "p", "article"):
            self.open.append(tag)
            if tag == "p":
                self.paragraphs.append("")

    def handle_endtag(self, tag):
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag)]

    def handle_data(self, data):
        if "title" in self.open:
            self.title += data
        if "nav" in self.open:
            self.nav.append(data)
        if "p" in self.open and self.paragraphs:
            self.paragraphs[-1] += data
        if "article" in self.open:
            self.article.append(data)


def page_text(path: Path) -> PageText:
    text = PageText()
    text.feed(path.read_text(encoding="utf-8"))
    return text


PIPE_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")  # a Markdown table's header rule, | --- |


def test_no_paragraph_holds_markdown_table_syntax(site):
    raw = [f"{page}: {p.strip()[:80]}" for page in pages(site) for p in page_text(site / page).paragraphs
           if PIPE_TABLE.search(p) or p.count("|") >= 4]
    assert not raw, "tables printed as text:\n" + "\n".join(raw)


def test_no_raw_tex_in_titles_or_navigation(site):
    """<title> is never typeset; navigation is typeset only on pages that load MathJax (maths of their own)."""
    raw = []
    for page in pages(site):
        text = page_text(site / page)
        typeset = re.search(r'<script[^>]+src="[^"]*mathjax', (site / page).read_text(encoding="utf-8")) is not None
        places = [("title", text.title)] + ([] if typeset else [("navigation", n) for n in text.nav])
        raw += [f"{page} ({where}): {value.strip()[:80]}" for where, value in places
                if re.search(r"\\[(\[]|\$[^$\s]", value)]
    assert not raw, "\n".join(raw)


class ProseText(HTMLParser):
    """The article's text outside code, scripts and typeset maths: what a reader sees as prose, tables and lists."""

    SKIP = ("code", "pre", "script", "style")

    def __init__(self):
        super().__init__()
        self.text, self.stack, self.in_article = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "article":
            self.in_article = True
        if tag in ("br", "hr", "img", "meta", "link", "input", "source", "wbr"):
            return
        skip = tag in self.SKIP or "math" in (dict(attrs).get("class") or "").split()
        self.stack.append((tag, skip))

    def handle_endtag(self, tag):
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k][0] == tag:
                del self.stack[k:]
                break
        if tag == "article":
            self.in_article = False

    def handle_data(self, data):
        if self.in_article and not any(skip for _, skip in self.stack):
            self.text.append(data)


def test_no_raw_tex_in_the_text(site):
    """Maths in a Markdown cell is typeset; a `$t_i$` in text that a cell's output writes is not (outputs are read
    as plain GitHub Markdown) and would show its dollars: generated text writes tᵢ, and so does prose that names
    the start step without maths (a bare t_i, as in a table header, is code's spelling, not the reader's)."""
    raw = []
    for page in pages(site):
        prose = ProseText()
        prose.feed((site / page).read_text(encoding="utf-8"))
        text = " ".join(prose.text)
        raw += [f"{page}: ...{text[max(0, m.start() - 40):m.end() + 20]}..."
                for m in re.finditer(r"\$[^$\s][^$]{0,40}?\$|\bt_i\b", text)]
    assert not raw, "raw TeX in the text:\n" + "\n".join(raw)


def test_no_page_is_empty(site):
    """Every page says something (search and the index are generated; index.html only redirects)."""
    skip = {"search.html", "genindex.html"}
    empty = [page for page in pages(site) if page not in skip
             and 'http-equiv="Refresh"' not in (site / page).read_text(encoding="utf-8")
             and len(" ".join(page_text(site / page).article).split()) < 30]
    assert not empty, f"pages with less than 30 words: {empty}"


FILE_LIKE_HOSTS = ("md", "py", "ipynb", "txt", "json", "yaml", "yml", "csv", "pt", "npy", "html")


def test_every_external_link_is_a_well_formed_url(site):
    bad = []
    for page in pages(site):
        for target in parse(site / page).targets:
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https"):
                continue
            host = parts.hostname or ""
            labels = host.split(".")
            if len(labels) < 2 or not all(labels) or labels[-1].lower() in FILE_LIKE_HOSTS:
                bad.append(f"{page}: {target}")
    assert not bad, "\n".join(bad)


class Images(HTMLParser):
    """The content images of a page's <article>, each with its alt text and whether it sits in a <figure> that has
    a <figcaption>; the frames of animation players (div.animation) are not content images."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.figures = [], [], []  # figures: [has caption] of the open <figure>s

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            inside = [t for t, _ in self.stack]
            if "article" in inside and not any("animation" in (a.get("class") or "").split() for _, a in self.stack):
                self.images.append({"alt": attrs.get("alt") or "", "src": attrs.get("src", ""),
                                    "figure": "figure" in inside, "index": len(self.figures) - 1})
            return
        if tag in ("br", "hr", "meta", "link", "input", "source", "wbr"):
            return
        if tag == "figure":
            self.figures.append(False)
        if tag == "figcaption" and self.figures:
            self.figures[-1] = True
        self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k][0] == tag:
                del self.stack[k:]
                break


def test_every_figure_has_a_caption_and_real_alt_text(site):
    missing = []
    for page in pages(site):
        images = Images()
        images.feed((site / page).read_text(encoding="utf-8"))
        for image in images.images:
            alt = image["alt"].strip()
            if not image["figure"] or not images.figures[image["index"]]:
                missing.append(f"{page}: {image['src'][:60]} has no caption")
            if len(alt.split()) < 3 or "/" in alt or re.search(r"\.(png|jpe?g|svg|gif)$", alt, re.I):
                missing.append(f"{page}: {image['src'][:60]} has alt text {alt!r}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", sorted(p for p, e in NOTEBOOK_PAGES.items() if "animations" in e))
def test_every_animation_moves_when_stepped(base_url, browser, page):
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/{page}")
    players = browser.find_elements(By.CSS_SELECTOR, "div.animation")
    assert players, page
    for player in players:
        frame = player.find_element(By.TAG_NAME, "img")
        before = frame.get_attribute("src")
        step = player.find_element(By.CSS_SELECTOR, 'button[title="Next frame"]')
        browser.execute_script("arguments[0].click()", step)
        assert frame.get_attribute("src") != before, f"{page}: an animation shows the same image after a step"


def test_no_table_is_wider_than_its_column(site, base_url, browser):
    """At 1280 px a table of the book fits the page's text column: none hides columns behind a horizontal
    scroll. The stored runs (results/<profile>/) are shown as they were executed, and are not re-rendered."""
    wide = {}
    for page in (p for p in pages(site) if not p.startswith("results/")):
        browser.get(f"{base_url}/{page}")
        widths = browser.execute_script("""
            const column = document.querySelector('article');
            if (!column) return [];
            const room = column.clientWidth + 2;
            return [...column.querySelectorAll('table')].map(t => [t.scrollWidth, room])
                   .filter(([width, space]) => width > space);""")
        if widths:
            wide[page] = widths
    assert not wide, f"tables wider than their column (table px, column px): {wide}"


def test_every_player_has_a_numbered_caption_and_a_still(site, base_url, browser):
    """A player (div.animation) sits in a numbered figure whose still (a frame-grid image) shows it without
    JavaScript and in print. The stored runs (results/<profile>/) are shown as they were executed."""
    missing = []
    for page in (p for p in pages(site) if not p.startswith("results/")):
        if 'class="animation"' not in (site / page).read_text(encoding="utf-8"):
            continue
        browser.get(f"{base_url}/{page}")
        missing += [f"{page}: {why}" for why in browser.execute_script("""
            return [...document.querySelectorAll('div.animation')].map((player, k) => {
                const figure = player.closest('figure');
                if (!figure || !figure.querySelector('figcaption .caption-number')) return `player ${k}: no numbered caption`;
                const still = figure.querySelector('.player-still img');
                if (!still || still.naturalWidth === 0) return `player ${k}: no still`;
                return null;
            }).filter(x => x);""")]
    assert not missing, "\n".join(missing)


def test_no_page_opens_on_a_screen_of_code(site, base_url, browser):
    """A reader's first screen is prose: the first thing under a page's title is not a code cell, and visible code
    takes less than a third of the window's height on the page as it opens. The stored runs (results/<profile>/)
    are shown as they were executed."""
    code_first = []
    for page in (p for p in pages(site) if not p.startswith("results/")):
        browser.get(f"{base_url}/{page}")
        found = browser.execute_script("""
            const article = document.querySelector('article');
            if (!article) return null;
            window.scrollTo(0, 0);
            const screen = window.innerHeight;
            let code = 0;
            for (const cell of article.querySelectorAll('div.cell_input')) {
                const box = cell.getBoundingClientRect();
                code += Math.max(0, Math.min(box.bottom, screen) - Math.max(box.top, 0));
            }
            const heading = article.querySelector('h1');
            let next = heading ? heading.nextElementSibling : null;
            while (next && next.matches('span, a.headerlink')) next = next.nextElementSibling;
            return [code / screen, next ? next.className : ''];""")
        if found and (found[0] > 1 / 3 or "cell" in found[1].split() and "tag_remove-input" not in found[1]):
            code_first.append(f"{page}: {found[0]:.0%} of the first screen is code, first block {found[1]!r}")
    assert not code_first, "\n".join(code_first)


# Table 1's layout (`tables.markdown_table`): dataset, method, tᵢ, n, ... as header cells.
TABLE1_HEADER = re.compile(r"<tr[^>]*>\s*" + r"\s*".join(rf"<th[^>]*>(?:<p>)?{name}(?:</p>)?</th>"
                                                    for name in ("dataset", "method", "tᵢ", "n")))


def test_study_results_are_shown_once_or_marked_as_a_quick_run(site):
    """Only the Results page shows the stored study's Table 1; a chapter that draws one of its own says at the
    top that it is the quick run of the build and links the Results page. The landing page's headline numbers
    are the Results page's."""
    results = (site / "book" / "results.html").read_text(encoding="utf-8")
    unmarked = []
    for page in pages(site):
        text = (site / page).read_text(encoding="utf-8")
        if page in ("book/results.html",) or page.startswith("results/") or not TABLE1_HEADER.search(text):
            continue
        notice = re.search(r'<div class="[^"]*\bquick-run\b[^"]*">.*?</div>', text, re.S)
        if not notice or "results.html" not in notice.group(0):
            unmarked.append(page)
    assert not unmarked, f"pages with a Table 1 but no quick-run notice linking the Results page: {unmarked}"
    landing = page_text(site / "book" / "intro.html")
    headline = " ".join(p for p in landing.paragraphs if "Free-Echo from" in p and "SSIM" in p)
    results_text = " ".join(page_text(site / "book" / "results.html").article)
    # SSIM and Dice as the tables print them (three decimals)
    assert all(number in results_text for number in re.findall(r"(?:SSIM of|Dice of) (\d\.\d{3})", headline)), headline
    assert TABLE1_HEADER.search(results)

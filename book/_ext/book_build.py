"""The book's own Sphinx extension.

1. Pages that read stored results (results/) are read and executed again on every build: Sphinx re-reads only
   changed sources and jupyter-cache keys on the notebook alone, so a newly stored run would not show.
2. Repeated <script> entries are dropped from every page: sphinx-thebe 0.3.1 (loaded by jupyter-book 1.0) adds
   its inline `const THEBE_JS_URL = ...` configuration on every `env-before-read-docs` event, which a
   jupyter-book build emits more than once: every page declared the constant twice and the browser logged a
   SyntaxError (tests/browser/test_site.py caught it).
"""


READS_STORED_RESULTS = ("book/results", "notebooks/07_benchmarks")


def reread_result_pages(app, env, added, changed, removed):
    return [doc for doc in READS_STORED_RESULTS if doc in env.found_docs]


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # The repeat is registered once with filename None and once with "" (an inline script either way).
        key = (str(script.filename or ""), tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("env-get-outdated", reread_result_pages)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

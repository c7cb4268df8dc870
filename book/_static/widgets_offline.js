// The Jupyter widget manager (served from _static/offline, see book/offline_assets.sh) defines its modules
// ("@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/html-manager/dist/...") inside
// embed-amd.js, and each finds its icon fonts next to its own module path, which RequireJS would resolve
// against the page's folder: a 404 on every page that shows a widget. Point those paths at the local copy,
// where the fonts lie, from the site root that Sphinx records on <html>.
const htmlManager = document.documentElement.dataset.content_root + "_static/offline/html-manager";
require.config({
  paths: {
    "@jupyter-widgets": htmlManager,
    "@jupyter-widgets/html-manager/dist": htmlManager,
  },
});

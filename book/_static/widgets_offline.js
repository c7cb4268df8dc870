// The Jupyter widget manager (served from _static/offline, see book/offline_assets.sh) finds its icon fonts
// next to the module path "@jupyter-widgets/html-manager/dist", which RequireJS would resolve against the
// page's own folder: point that path at the local copy, from the site root that Sphinx records on <html>.
require.config({
  paths: {
    "@jupyter-widgets/html-manager/dist":
      document.documentElement.dataset.content_root + "_static/offline/html-manager",
  },
});

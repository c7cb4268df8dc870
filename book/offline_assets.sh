#!/usr/bin/env bash
# The scripts the built book would otherwise load from a CDN, served from its own _static folder so that
# widgets, animations and equations render without internet: RequireJS and the Jupyter widget manager (the
# ipywidgets 8 slider of notebook 03) and MathJax 3. Pinned npm packages, fetched once at set-up with
# `npm pack` (no node_modules), assembled in a temporary folder and moved into place whole.
# Usage: book/offline_assets.sh DEST   (make book calls it with book/_static/offline)
set -euo pipefail
dest=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.13 mathjax@3.2.2 >/dev/null
for tgz in *.tgz; do mkdir "${tgz%.tgz}" && tar -xzf "$tgz" -C "${tgz%.tgz}"; done
mkdir -p out/html-manager out/mathjax/output/chtml/fonts out/mathjax/input/tex
cp requirejs-2.3.7/package/require.js out/
cp jupyter-widgets-html-manager-1.0.13/package/dist/embed-amd.js out/html-manager/
cp jupyter-widgets-html-manager-1.0.13/package/dist/*.{woff,woff2,ttf,eot,svg} out/html-manager/
mathjax=mathjax-3.2.2/package/es5
cp "$mathjax/tex-chtml.js" out/mathjax/
cp -r "$mathjax/output/chtml/fonts/woff-v2" out/mathjax/output/chtml/fonts/
cp -r "$mathjax/input/tex/extensions" out/mathjax/input/tex/
cp -r "$mathjax/ui" "$mathjax/a11y" out/mathjax/
cp jupyter-widgets-html-manager-1.0.13/package/LICENSE out/LICENSE.html-manager
cp mathjax-3.2.2/package/LICENSE out/LICENSE.mathjax  # require.js carries its MIT licence in its header
cd - >/dev/null
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$work/out" "$dest"
echo "vendored scripts in $dest ($(du -sh "$dest" | cut -f1))"

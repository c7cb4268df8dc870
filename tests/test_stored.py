"""Reading the numbers that stored (papermill-executed) notebooks glued."""
import json

import nbformat
import pytest

from freeecho_core.stored import glued_values, stored_runs


def glue_output(name, text, prefix="application/papermill.record/"):
    """A glue output as papermill stores it (myst_nb.glue with display=False)."""
    return nbformat.v4.new_output("display_data", data={prefix + "text/plain": text},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def write_notebook(path, outputs):
    cell = nbformat.v4.new_code_cell("glue(...)", outputs=outputs)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("text")]), path)


def test_glued_numbers_and_strings_are_read_back(tmp_path):
    write_notebook(tmp_path / "05.ipynb", [glue_output("ssim", "0.4812"), glue_output("steps", "8000"),
                                          glue_output("shape", "'16 x 64 x 64'"), glue_output("fig", "<Figure>", ""),
                                          nbformat.v4.new_output("stream", text="not glued")])
    assert glued_values(tmp_path / "05.ipynb") == {"ssim": 0.4812, "steps": 8000, "shape": "16 x 64 x 64",
                                                   "fig": "<Figure>"}


def test_stored_runs_are_grouped_by_profile(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cpu.json").write_text(json.dumps([]))
    (tmp_path / "gpu-short").mkdir()
    write_notebook(tmp_path / "gpu-short" / "02_training.ipynb", [glue_output("final_loss", "0.21")])
    assert stored_runs(tmp_path) == {"gpu-short": {"02_training": {"final_loss": 0.21}}}
    (tmp_path / "gpu-short" / "broken.ipynb").write_text("{")
    with pytest.raises(ValueError, match="broken.ipynb: not an executed notebook"):
        stored_runs(tmp_path)

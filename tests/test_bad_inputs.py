"""Bad inputs and faults against the `freeecho` command, as a new user meets them: each case must end with exit
code 2 and one line on stderr that names the option or file and what was expected, print no traceback, and
leave no file behind."""
import csv
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from freeecho_core.checkpoint import load_checkpoint, save_checkpoint
from freeecho_core.cli import main
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.profiles import load_profile

EXAMPLE_MAP = Path(__file__).resolve().parents[1] / "examples" / "ed_map_2ch.png"


@pytest.fixture(scope="module")
def inputs(trained, tmp_path_factory):
    """Good and bad files, made once: datasets, checkpoints, profiles and weights."""
    data, unconditional, clsfree = trained
    root = tmp_path_factory.mktemp("inputs")
    files = {"camus": data, "unconditional": unconditional, "clsfree": clsfree, "map": EXAMPLE_MAP}
    payload = load_checkpoint(unconditional)
    bad_payloads = {
        "nan": payload | {"model": {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                    for k, v in payload["model"].items()}},
        "unknown_key": payload | {"config": payload["config"] | {"wings": 2}},
        "misfit": payload | {"config": payload["config"] | {"dim": payload["config"]["dim"] * 2}},
    }
    for name, bad in bad_payloads.items():
        files[f"ckpt_{name}"] = save_checkpoint(root / f"{name}.pt", bad)
    (root / "text.pt").write_text("these are not weights\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "folder.pt").mkdir()
    files |= {"ckpt_text": root / "text.pt", "ckpt_empty": root / "empty.pt", "ckpt_folder": root / "folder.pt",
              "text": root / "text.pt"}
    smoke = load_profile("smoke")
    for name, change in {"batch0": {"batch_size": 0}, "batch_neg": {"batch_size": -2},
                         "ckpt_every0": {"checkpoint_every": 0}, "lr_fast": {"lr": "fast"},
                         "bf16_maybe": {"bf16": "maybe"}, "p_uncond": {"p_uncond": 1.5},
                         "preset": {"preset": "huge"}, "size0": {"size": 0}, "unknown": {"wings": 2},
                         "size33": {"size": 33}, "misspelt": {"stpes": 5}}.items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(smoke | {"train": smoke["train"] | change}))
        files[f"profile_{name}"] = path
    for name, change in {"steps0": {"steps": 0}, "lr_fast": {"lr": "fast"}, "misspelt": {"levles": 3}}.items():
        path = root / f"segment_{name}.yaml"
        path.write_text(yaml.safe_dump(smoke | {"segment": smoke["segment"] | change}))
        files[f"profile_segment_{name}"] = path
    (root / "section.yaml").write_text(yaml.safe_dump(smoke | {"segmnet": smoke["segment"]}))
    files["profile_section"] = root / "section.yaml"
    (root / "broken.yaml").write_text("train: [1, 2\n")
    (root / "empty.yaml").write_text("")
    (root / "notrain.yaml").write_text("segment:\n  steps: 1\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00train")
    files |= {f"profile_{n}": root / f"{n}.yaml" for n in ("broken", "empty", "notrain", "binary")}
    files["echonet"] = make_phantom_dataset(root / "echonet", "echonet", 3, 0, PhantomConfig(height=32, frames=6),
                                            workers=1, progress=False)
    files["other_camus"] = make_phantom_dataset(root / "other", "camus", 3, 1, PhantomConfig(height=32, frames=6),
                                                workers=1, progress=False)
    run = root / "run"
    assert main(["train", "--profile", "smoke", "--data", str(data), "--run-dir", str(run), "--steps", "2",
                 "--device", "cpu"]) == 0
    files["run"] = run
    return files


def echonet_copy(inputs, tmp_path, change_filelist=None, change_tracings=None, change_video=None) -> Path:
    """A copy of the phantom EchoNet folder with its TRAIN video's rows or file changed."""
    root = Path(shutil.copytree(inputs["echonet"], tmp_path / "echonet"))
    for name, change in (("FileList.csv", change_filelist), ("VolumeTracings.csv", change_tracings)):
        if change:
            with (root / name).open(newline="") as f:
                rows = list(csv.DictReader(f))
            rows = change(rows)
            with (root / name).open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    if change_video:
        train_name = next(r["FileName"] for r in csv.DictReader((root / "FileList.csv").open())
                          if r["Split"] == "TRAIN")
        change_video(root / "Videos" / f"{train_name}.avi")
    return root


def first_train_row(change):
    def apply(rows):
        index = next(i for i, r in enumerate(rows) if r["Split"] == "TRAIN")
        rows[index] = rows[index] | change
        return rows
    return apply


def truncate_avi(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def camus_copy(inputs, tmp_path, change_cfg) -> Path:
    """A copy of the phantom CAMUS folder with every Info_2CH.cfg changed by change_cfg(text) -> bytes."""
    root = Path(shutil.copytree(inputs["camus"], tmp_path / "camus", ignore=shutil.ignore_patterns(".*")))
    for cfg in root.rglob("Info_2CH.cfg"):
        cfg.write_bytes(change_cfg(cfg.read_text()))
    return root


def swap_ed_es(text: str) -> bytes:
    info = dict(line.split(": ", 1) for line in text.splitlines() if line)
    info["ED"], info["ES"] = info["ES"], info["ED"]
    return "".join(f"{k}: {v}\n" for k, v in info.items()).encode()


TRAIN = ["train", "--device", "cpu"]
# (case id, arguments built from the input files and the case's own tmp_path, text the error must contain)
CASES = [
    # train: options and profile settings
    ("train-steps-0", lambda f, t: TRAIN + ["--data", f["camus"], "--run-dir", t / "r", "--steps", "0"], "--steps"),
    ("train-steps-neg", lambda f, t: TRAIN + ["--data", f["camus"], "--run-dir", t / "r", "--steps", "-5"], "--steps"),
    *((f"train-profile-{name}", lambda f, t, name=name: TRAIN + ["--profile", f[f"profile_{name}"], "--data",
                                                                 f["camus"], "--run-dir", t / "r"], expected)
      for name, expected in [("batch0", "batch_size"), ("batch_neg", "batch_size"),
                             ("ckpt_every0", "checkpoint_every"), ("lr_fast", "train.lr"), ("bf16_maybe", "bf16"),
                             ("p_uncond", "p_uncond"), ("preset", "preset"), ("size0", "train.size"),
                             ("unknown", "unknown training settings"), ("broken", "not valid YAML"),
                             ("size33", "train.size: expected a multiple of 2 for the tiny preset"),
                             ("misspelt", "'stpes' (did you mean 'steps'?)"),
                             ("section", "'segmnet' (did you mean 'segment'?)"),
                             ("empty", "empty"), ("notrain", "section `train` is missing"),
                             ("binary", "not a text file")]),
    ("train-profile-missing", lambda f, t: TRAIN + ["--profile", "nosuch", "--data", f["camus"]], "not found"),
    ("train-section-missing", lambda f, t: TRAIN + ["--section", "train_later", "--data", f["camus"], "--run-dir",
                                                    t / "r"], "section `train_later` is missing"),
    ("train-device-cuda", lambda f, t: ["train", "--data", f["camus"], "--run-dir", t / "r", "--device", "cuda"],
     "--device cuda"),
    ("train-device-tpu", lambda f, t: ["train", "--data", f["camus"], "--run-dir", t / "r", "--device", "tpu9"],
     "--device tpu9"),
    ("train-data-missing", lambda f, t: TRAIN + ["--data", t / "nothing", "--run-dir", t / "r"], "nothing"),
    ("train-resume-nothing", lambda f, t: TRAIN + ["--data", f["camus"], "--run-dir", t / "r", "--resume"],
     "does not exist"),
    ("train-resume-below", lambda f, t: TRAIN + ["--data", f["camus"], "--run-dir", f["run"], "--resume",
                                                 "--steps", "1"], "beyond the 1 steps"),
    ("train-resume-other-data", lambda f, t: TRAIN + ["--data", f["other_camus"], "--run-dir", f["run"],
                                                      "--resume", "--steps", "3"], "--other-data"),
    ("train-run-dir-file", lambda f, t: TRAIN + ["--data", f["camus"], "--run-dir", f["text"]], "--run-dir"),
    # segmenter: its profile section is checked as the train section is
    *((f"segmenter-profile-{name}", lambda f, t, name=name: [
        "segmenter", "--profile", f[f"profile_segment_{name}"], "--data", f["camus"], "--out", t / "s.pt",
        "--device", "cpu"], expected)
      for name, expected in [("steps0", "segment.steps"), ("lr_fast", "segment.lr"),
                             ("misspelt", "'levles' (did you mean 'levels'?)")]),
    # generate
    ("generate-es-frame-beyond-the-clip", lambda f, t: [
        "generate", "--map", f["map"], "--checkpoint", f["unconditional"], "--out", t / "o", "--ef", "0.5",
        "--es-frame", "100"], "es_frame 100"),
    ("generate-cache-dir-file", lambda f, t: [
        "--cache-dir", f["text"], "generate", "--map", f["map"], "--checkpoint", f["unconditional"], "--out",
        t / "o"], "--cache-dir"),
    *((f"generate-{option.strip('-')}-{value}", lambda f, t, o=option, v=value: [
        "generate", "--map", f["map"], "--checkpoint", f["unconditional"], "--out", t / "o", o, v], option)
      for option, value in [("--samples", "0"), ("--samples", "-1"), ("--fps", "0"), ("--fps", "nan"),
                            ("--fps", "0.001"),
                            ("--t-start", "64"), ("--t-start", "-1"), ("--seed", "-1"), ("--device", "tpu9"),
                            ("--sampler-steps", "1"), ("--sampler-steps", "many"), ("--solver", "rk4")]),
    *((f"generate-checkpoint-{name}", lambda f, t, name=name: [
        "generate", "--map", f["map"], "--checkpoint", f[f"ckpt_{name}"] if name != "missing" else t / "no.pt",
        "--out", t / "o"], expected)
      for name, expected in [("text", "is not a torch checkpoint"), ("empty", "is empty"), ("folder", "is a folder"),
                             ("missing", "no checkpoint there"), ("nan", "NaN"),
                             ("unknown_key", "unknown UNet3D config entries ['wings']"),
                             ("misfit", "do not fit its UNet3D config")]),
    ("generate-clsfree-model", lambda f, t: ["generate", "--map", f["map"], "--checkpoint", f["clsfree"], "--out",
                                             t / "o"], "conditional (Cls-Free) model"),
    ("generate-out-file", lambda f, t: ["generate", "--map", f["map"], "--checkpoint", f["unconditional"], "--out",
                                        f["text"]], "--out"),
    ("generate-map-missing", lambda f, t: ["generate", "--map", t / "no.png", "--checkpoint", f["unconditional"],
                                           "--out", t / "o"], "no.png"),
    ("generate-map-text", lambda f, t: ["generate", "--map", f["text"], "--checkpoint", f["unconditional"],
                                        "--out", t / "o"], "text.pt"),
    # evaluate
    *((f"evaluate-{option.strip('-')}-{value}", lambda f, t, o=option, v=value: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", o, v], option)
      for option, value in [("--samples", "0"), ("--samples", "-3"), ("--max-maps", "0"), ("--batch", "0"),
                            ("--start-steps", "64"), ("--guidance", "nan"), ("--sampler-steps", "0")]),
    ("evaluate-clsfree-without-its-model", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", "--methods",
        "clsfree"], "needs its model, --clsfree"),
    ("evaluate-clsfree-steps-1", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e",
        "--clsfree-sampler-steps", "1"], "--clsfree-sampler-steps"),
    ("evaluate-clsfree-dpmpp2m-churn", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", "--solver", "euler",
        "--sampler", "churn", "--clsfree-solver", "dpmpp2m"], "dpmpp2m solver integrates the deterministic ODE only"),
    ("evaluate-dpmpp2m-churn", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", "--solver",
        "dpmpp2m", "--sampler", "churn"], "dpmpp2m solver integrates the deterministic ODE only"),
    # nfe-study
    *((f"nfe-study-{option.strip('-')}-{value}", lambda f, t, o=option, v=value: [
        "nfe-study", "--data", f["camus"], "--unconditional", f["unconditional"], "--segmenter", f["text"],
        "--out", t / "n", "--methods", "free-echo", o, v], option)
      for option, value in [("--grid", "heun:97,24"), ("--grid", "rk4:7"), ("--grid", "euler:seven"),
                            ("--samples", "1"), ("--max-maps", "0")]),
    ("nfe-study-segmenter-missing", lambda f, t: [
        "nfe-study", "--data", f["camus"], "--unconditional", f["unconditional"], "--segmenter", t / "seg.pt",
        "--out", t / "n", "--methods", "free-echo"], "--segmenter"),
    ("nfe-study-clsfree-missing", lambda f, t: [
        "nfe-study", "--data", f["camus"], "--unconditional", f["unconditional"], "--segmenter", f["text"],
        "--out", t / "n"], "--clsfree"),
    ("evaluate-unconditional-is-clsfree", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["clsfree"], "--out", t / "e"], "expected an uncond"),
    ("evaluate-clsfree-is-unconditional", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--clsfree", f["unconditional"],
        "--out", t / "e"], "Cls-Free baseline's conditional model"),
    ("evaluate-nan-checkpoint", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["ckpt_nan"], "--out", t / "e"], "NaN"),
    ("evaluate-i3d-not-torchscript", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", "--i3d-weights",
        f["text"]], "TorchScript"),
    ("evaluate-segmenter-missing", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", "--segmenter",
        t / "seg.pt"], "--segmenter"),
    ("evaluate-segmenter-wrong", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", t / "e", "--segmenter",
        f["unconditional"]], "not a segmenter checkpoint"),
    ("evaluate-out-file", lambda f, t: [
        "evaluate", "--data", f["camus"], "--unconditional", f["unconditional"], "--out", f["text"]], "--out"),
    # phantom
    *((f"phantom-{option.strip('-')}-{value}", lambda f, t, o=option, v=value: [
        "phantom", "--format", "camus", "--out", t / "p", o, v], option)
      for option, value in [("--height", "0"), ("--height", "-8"), ("--frames", "0"), ("--frames", "1"),
                            ("--cycles", "nan"), ("--cycles", "0"), ("--count", "0"), ("--workers", "0")]),
    ("phantom-out-file", lambda f, t: ["phantom", "--format", "camus", "--out", f["text"]], "is a file"),
    ("phantom-no-format", lambda f, t: ["phantom", "--out", t / "p"], "give --format"),
    ("phantom-stats-with-out", lambda f, t: ["phantom", "--stats", f["camus"], "--out", t / "p"], "drop --out"),
    # bench
    *((f"bench-{option.strip('-')}-{value}", lambda f, t, o=option, v=value: ["bench", "--preset", "tiny", o, v],
       option) for option, value in [("--repeats", "0"), ("--size", "0"), ("--batch", "0"), ("--device", "tpu9")]),
    ("bench-cpu-sampling-map-missing", lambda f, t: ["bench", "--suite", "cpu-sampling", "--checkpoint",
                                                     f["unconditional"], "--map", t / "no.png"], "--map"),
    # data files: EchoNet
    ("echonet-split-unknown", lambda f, t: TRAIN + ["--data", echonet_copy(
        f, t, first_train_row({"Split": "TRIAN"})), "--run-dir", t / "r"], "Split is 'TRIAN'"),
    ("echonet-duplicate-row", lambda f, t: TRAIN + ["--data", echonet_copy(
        f, t, lambda rows: rows + [rows[0]]), "--run-dir", t / "r"], "again"),
    ("echonet-fps-0", lambda f, t: TRAIN + ["--data", echonet_copy(
        f, t, first_train_row({"FPS": "0"})), "--run-dir", t / "r"], "FPS is '0'"),
    ("echonet-fps-negative", lambda f, t: TRAIN + ["--data", echonet_copy(
        f, t, first_train_row({"FPS": "-25"})), "--run-dir", t / "r"], "FPS is '-25'"),
    ("echonet-size-mismatch", lambda f, t: TRAIN + ["--data", echonet_copy(
        f, t, first_train_row({"FrameHeight": "100", "FrameWidth": "90"})), "--run-dir", t / "r"],
     "FileList.csv gives 90 x 100"),
    ("echonet-truncated-video", lambda f, t: TRAIN + ["--data", echonet_copy(
        f, t, change_video=truncate_avi), "--run-dir", t / "r"], "NumberOfFrames"),
    # data files: CAMUS
    ("camus-cfg-binary", lambda f, t: TRAIN + ["--data", camus_copy(f, t, lambda text: b"\xff\xd8\xff\xe0JFIF"),
                                               "--run-dir", t / "r"], "not UTF-8 text"),
    ("camus-cfg-ed-es-swapped", lambda f, t: TRAIN + ["--data", camus_copy(f, t, swap_ed_es), "--run-dir",
                                                      t / "r"], "look swapped"),
]


def binary_filelist(f, t):
    """A FileList.csv replaced by binary bytes."""
    root = echonet_copy(f, t)
    (root / "FileList.csv").write_bytes(b"FileName,EF\n\x89PNG\r\n\x1a\n\xff\xfe")
    return TRAIN + ["--data", root, "--run-dir", t / "r"]


CASES.append(("echonet-filelist-binary", binary_filelist, "not UTF-8 text"))


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("build, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gives_one_clear_line_and_leaves_nothing(build, expected, inputs, tmp_path, capsys):
    args = [str(a) for a in build(inputs, tmp_path)]
    before, run_before = tree(tmp_path), tree(inputs["run"])
    try:
        code = main(args)
    except SystemExit as exit:  # argparse
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    command = next(a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1: i] != ["--cache-dir"])
    assert err.startswith(f"freeecho {command}: error: ") and "Traceback" not in err
    assert expected in err, err
    assert tree(tmp_path) == before and tree(inputs["run"]) == run_before  # nothing written, nothing left behind


def test_the_suite_covers_at_least_sixty_cases():
    assert len(CASES) >= 60


def test_debug_shows_the_traceback(inputs, tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        main(["--debug", "generate", "--map", str(EXAMPLE_MAP), "--checkpoint", str(inputs["ckpt_empty"]),
              "--out", str(tmp_path / "o")])


def test_zero_area_tracing_skips_the_video_with_one_warning(inputs, tmp_path):
    from freeecho_core.data.dataset import EchoClips

    def collapse(rows):
        name = next(r["FileName"] for r in csv.DictReader((inputs["echonet"] / "FileList.csv").open())
                    if r["Split"] == "VAL")
        for row in rows:
            if row["FileName"].startswith(name):
                row["X2"], row["Y2"] = row["X1"], row["Y1"]  # every chord of length zero
        return rows
    root = echonet_copy(inputs, tmp_path, change_tracings=collapse)
    with pytest.warns(UserWarning, match="skipped 1 of 1 VAL videos without usable ED/ES tracings"):
        assert len(EchoClips(root, "VAL")) == 0
    assert len(EchoClips(root, "TRAIN")) == 1

"""The papermill profiles in params/ agree with the notebooks' parameters cells."""
import ast
from pathlib import Path

import papermill
import pytest
import yaml

from freeecho_core.study.segmenter import seg_config_from_profile
from freeecho_core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "params").glob("*.yaml"))
NOTEBOOKS = {p.stem: p for p in (ROOT / "notebooks").glob("*.ipynb")}


def notebook_defaults(name: str) -> dict:
    return {k: ast.literal_eval(v["default"]) for k, v in papermill.inspect_notebook(str(NOTEBOOKS[name])).items()}


def test_the_four_profiles_exist():
    assert {p.stem for p in PROFILES} == {"smoke", "cpu", "gpu-short", "paper"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profiles_name_only_declared_parameters_of_every_notebook(profile):
    sections = {name: values for name, values in yaml.safe_load(profile.read_text()).items()
                if name not in training_sections(profile) and not name.startswith("segment")}
    assert set(sections) == set(NOTEBOOKS), f"{profile.name} must have one section per notebook"
    for name, values in sections.items():
        declared = notebook_defaults(name)
        assert set(values) == set(declared), f"{profile.name}:{name}"
        for key, value in values.items():
            assert type(value) is type(declared[key]), f"{profile.name}:{name}.{key}"


STAGE_SETTINGS = {"steps", "lr", "lr_cooldown", "ema_halflife", "noise_uniform_share"}  # what a later stage changes


def training_sections(profile: Path) -> list[str]:
    """`train` and the later stages of training a profile holds (`train_high_noise`, ...)."""
    return [name for name in yaml.safe_load(profile.read_text()) if name == "train" or name.startswith("train_")]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profiles_hold_valid_training_sections(profile):
    sections = yaml.safe_load(profile.read_text())
    fields = TrainConfig.__dataclass_fields__
    for name in training_sections(profile):
        train = sections[name]
        assert set(train) <= set(fields), f"{profile.name}: unknown settings {set(train) - set(fields)}"
        for key, value in train.items():
            assert type(value) is type(getattr(TrainConfig(), key)), f"{profile.name}: {name}.{key}"
        TrainConfig(**train)
    later = {name: sections[name] for name in training_sections(profile) if name != "train"}
    for name, stage in later.items():  # a later stage continues the same run: only its schedule and noise differ
        assert {k: v for k, v in stage.items() if k not in STAGE_SETTINGS} == \
            {k: v for k, v in sections["train"].items() if k not in STAGE_SETTINGS}, name
        assert stage["steps"] > sections["train"]["steps"], name


def test_smoke_profile_equals_the_notebook_defaults():
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    for name in NOTEBOOKS:
        assert smoke[name] == notebook_defaults(name), name


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profiles_hold_a_segmenter_at_the_training_clip_size(profile):
    sections = yaml.safe_load(profile.read_text())
    config = seg_config_from_profile(sections)
    assert (config.frames, config.size) == (sections["train"]["frames"], sections["train"]["size"])
    with pytest.raises(ValueError, match="frames and size come from"):
        seg_config_from_profile(sections | {"segment": {"size": 64}})

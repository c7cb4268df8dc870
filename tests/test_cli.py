import json
from pathlib import Path

import yaml

from freeecho_core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_info_lists_the_presets_and_the_start_step_sigmas(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "preset paper: 3,140,153 parameters" in out
    assert "t_i=15: sigma=18.99" in out


def test_bench_writes_a_json_record_per_preset(tmp_path, capsys):
    out = tmp_path / "bench" / "forward.json"
    assert main(["bench", "--preset", "tiny", "--frames", "2", "--size", "8", "--repeats", "1", "--out", str(out)]) == 0
    (record,) = json.loads(out.read_text())
    assert record["preset"] == "tiny" and record["shape"] == [1, 1, 2, 8, 8]
    assert record["seconds_median"] > 0 and "commit" in record["code_version"]


def test_bench_reports_bad_sizes_as_an_error(capsys):
    assert main(["bench", "--preset", "paper", "--size", "10", "--repeats", "1"]) == 2
    assert "multiples of 4" in capsys.readouterr().err


def test_phantom_writes_a_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["phantom", "--format", "echonet", "--out", str(tmp_path / "e"), "--count", "1", "--height", "32",
            "--frames", "4", "--workers", "1"]
    assert main(args) == 0
    assert (tmp_path / "e" / "FileList.csv").is_file() and len(list((tmp_path / "e" / "Videos").iterdir())) == 1
    assert main(args) == 2
    assert "is a folder that is not empty" in capsys.readouterr().err


def test_train_runs_a_profile_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["phantom", "--format", "camus", "--out", str(data), "--count", "3", "--height", "32",
                 "--frames", "6", "--workers", "1"]) == 0
    args = ["train", "--profile", "smoke", "--data", str(data), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    assert main(args + ["--steps", "2"]) == 0
    with (tmp_path / "run" / "log.csv").open("a") as log:  # a step logged by a process killed before its checkpoint
        log.write("3,0.5,1.0\n")
    assert main(args + ["--steps", "3", "--resume"]) == 0
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 4  # header and steps 1-3
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["steps"] == 3 and card["data"]["phantom"]["count"] == 3 and "--resume" in card["command"]
    assert card["training_seconds"] > 0 and card["file_sizes_mb"]["ema.pt"] > 0
    assert main(["train", "--profile", "nosuch", "--data", str(data)]) == 2
    assert "profile 'nosuch' not found" in capsys.readouterr().err


def test_a_later_section_of_the_profile_continues_the_run_and_the_card_keeps_both_stages(tmp_path):
    data = tmp_path / "data"
    assert main(["phantom", "--format", "camus", "--out", str(data), "--count", "3", "--height", "32",
                 "--frames", "6", "--workers", "1"]) == 0
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    later = smoke["train"] | {"steps": 4, "lr": 5e-4, "lr_cooldown": 2, "noise_uniform_share": 0.5}
    profile = tmp_path / "staged.yaml"
    profile.write_text(yaml.safe_dump(smoke | {"train_later": later}))
    run = ["--profile", str(profile), "--data", str(data), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    assert main(["train", *run, "--steps", "2"]) == 0
    card_path = tmp_path / "run" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["held_out_scores"] = {"TEST": "scores of the weights at step 2"}
    card_path.write_text(json.dumps(card))
    assert main(["train", *run, "--section", "train_later", "--resume"]) == 0
    card = json.loads(card_path.read_text())
    assert card["steps"] == 4 and card["train_config"]["noise_uniform_share"] == 0.5 and card["held_out_scores"] == {}
    first, second = card["stages"]
    assert first["until_step"] == 2 and first["train_config"]["noise_uniform_share"] == 0.0
    assert first["held_out_scores"] == {"TEST": "scores of the weights at step 2"}
    assert second["until_step"] == 4 and "--section train_later" in second["command"]


def test_segmenter_trains_at_the_profile_clip_size_and_reports_held_out_dice(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["phantom", "--format", "camus", "--out", str(data), "--count", "3", "--height", "32",
                 "--frames", "6", "--workers", "1"]) == 0
    out = tmp_path / "seg.pt"
    assert main(["segmenter", "--profile", "smoke", "--data", str(data), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    card_path = tmp_path / "seg.card.json"
    assert f"wrote {out} and {card_path}; held-out (VAL) Dice: LV cavity 0." in printed and "left atrium" in printed
    card = json.loads(card_path.read_text())
    assert card["training_seconds"] > 0 and card["held_out_scores"]["VAL Dice"]["LV cavity"] > 0
    assert card["data"]["phantom"]["count"] == 3 and "--profile smoke" in card["command"]
    assert main(["segmenter", "--data", str(tmp_path / "nothing")]) == 2
    assert "neither a CAMUS folder" in capsys.readouterr().err


def test_segmenter_tested_on_another_folder_reports_its_dice_there(tmp_path, capsys):
    """Trained on the CAMUS look, read on EchoNet-format videos of other hearts: the sim-to-real command."""
    camus, echonet = tmp_path / "camus", tmp_path / "echonet"
    assert main(["phantom", "--format", "camus", "--out", str(camus), "--count", "3", "--height", "32",
                 "--frames", "6", "--workers", "1"]) == 0
    assert main(["phantom", "--format", "echonet", "--out", str(echonet), "--count", "2", "--frames", "6",
                 "--workers", "1", "--seed", "5"]) == 0
    out = tmp_path / "seg.pt"
    assert main(["segmenter", "--profile", "smoke", "--data", str(camus), "--out", str(out), "--device", "cpu",
                 "--test-on", str(echonet)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "seg.transfer.json").read_text())
    assert report["recordings"] == 2 and report["frames"] == 4 and 0 <= report["dice_lv_median"] <= 1  # ED and ES
    assert f"--test-on {echonet}: Dice LV median {report['dice_lv_median']:.3f}" in printed
    assert set(report["per_recording"]) == {e.stem for e in (echonet / "Videos").glob("*.avi")}
    assert main(["segmenter", "--profile", "smoke", "--data", str(camus), "--out", str(tmp_path / "s2.pt"),
                 "--test-on", str(tmp_path / "nothing")]) == 2
    assert "--test-on" in capsys.readouterr().err and not (tmp_path / "s2.pt").exists()

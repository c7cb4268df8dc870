from pathlib import Path

import pytest
import torch

from freeecho_core.checkpoint import load_checkpoint, save_checkpoint, unet_from_payload, unet_payload
from freeecho_core.unet3d import UNet3D, unet3d_config


def test_checkpoint_round_trip_loads_weights_only(tmp_path):
    torch.manual_seed(0)
    net = UNet3D(unet3d_config("tiny", dim_mults=(1, 2), cond_channels=2))
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", unet_payload(net, step=12))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)  # loads without unpickling code
    assert raw["step"] == 12 and raw["code_version"]["package"] == "0.1.0"
    loaded = unet_from_payload(load_checkpoint(path))
    assert loaded.config == net.config
    for (name, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x, c, cond = torch.randn(1, 1, 2, 8, 8), torch.zeros(1), torch.rand(1, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(net.eval()(x, c, cond), loaded.eval()(x, c, cond))


def test_loading_a_file_that_is_not_a_checkpoint_names_it(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt is not a torch checkpoint"):
        load_checkpoint(bad)
    torch.save({"config": {}, "where": Path("runs")}, tmp_path / "pickled.pt")  # an object, not only tensors
    with pytest.raises(ValueError, match="pickled.pt is not a weights-only Free-Echo checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "noconfig.pt")
    with pytest.raises(ValueError, match="noconfig.pt holds no model config"):
        load_checkpoint(tmp_path / "noconfig.pt")


def test_missing_weights_entry_is_reported(tmp_path):
    payload = unet_payload(UNet3D(unet3d_config("tiny")))
    with pytest.raises(ValueError, match="no .ema. weights"):
        unet_from_payload(payload, weights="ema")

"""The recall suite's model side: a tower pretrained for the suite's world (the paper's vision side is a pretrained
SigLIP, not a random one), written once and shared by every variant, and the export of a trained model."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from research.recall.recall_model import (
    export_recall_model,
    pretrain_recall_tower,
    random_frames,
    recall_tower,
    write_recall_init,
)
from research.recall.recall_suite import BACKGROUNDS, SHAPE_COLOURS, SHAPES


def test_random_frames_show_what_their_labels_say():
    frames, labels = random_frames(64, 32, random.Random(0))
    assert frames.shape == (64, 3, 32, 32) and frames.dtype == torch.uint8
    backgrounds, colours = list(BACKGROUNDS), list(SHAPE_COLOURS)
    for frame, (background, colour, shape) in zip(frames, labels.tolist(), strict=True):
        pixels = frame.permute(1, 2, 0).reshape(-1, 3).float()
        wanted = torch.tensor(BACKGROUNDS[backgrounds[background]], dtype=torch.float32)
        near_background = ((pixels - wanted).abs().max(-1).values <= 6).float().mean()
        assert (colour == 0) == (shape == 0)  # a flash has both a colour and a shape, or there is none
        if colour == 0:
            assert near_background == 1.0
        else:
            assert 0.0 < near_background < 0.8  # the shape covers much of the frame (70-90 % of its side)
            flash = torch.tensor(SHAPE_COLOURS[colours[colour - 1]], dtype=torch.float32)
            assert ((pixels - flash).abs().max(-1).values <= 6).float().mean() > 0.2
    assert labels[:, 2].max() <= len(SHAPES)
    assert 0.5 < (labels[:, 1] > 0).float().mean() < 0.95  # three in four frames flash


@pytest.mark.slow
def test_pretraining_teaches_the_tower_the_suites_world_and_touches_nothing_else(tmp_path):
    model = write_recall_init(tmp_path / "model", "memaug", seed=0)
    before = load_file(f"{model}/model.safetensors")
    accuracy = pretrain_recall_tower(model, steps=80, seed=0)
    # Chance: 1/8 backgrounds, 1/4 for the colour (or none), 1/4 for the shape (or none).
    assert accuracy["background"] > 0.8 and accuracy["colour"] > 0.8 and accuracy["shape"] > 0.5, accuracy
    after = load_file(f"{model}/model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("model.vision_tower.") for name in changed)


def test_the_shared_tower_is_written_once_and_a_random_one_on_request(tmp_path):
    tower = recall_tower(tmp_path / "tower-random", pretrained=False, seed=3)
    stamp = (tmp_path / "tower-random" / "model.safetensors").stat().st_mtime_ns
    assert recall_tower(tmp_path / "tower-random", pretrained=False, seed=3) == tower
    assert (tmp_path / "tower-random" / "model.safetensors").stat().st_mtime_ns == stamp
    assert not (tmp_path / "tower-random.partial").exists()
    fresh = write_recall_init(tmp_path / "fresh", "memaug", seed=3)
    patches = "model.vision_tower.embeddings.patch_embedding.weight"  # a random tower is the seed's init, untrained
    assert torch.equal(
        load_file(f"{tower}/model.safetensors")[patches], load_file(f"{fresh}/model.safetensors")[patches]
    )


def test_an_exported_model_has_weights_processor_remote_code_and_card_only(tmp_path):
    model = write_recall_init(tmp_path / "model", "memaug", seed=0)
    (tmp_path / "model" / "optimizer.pt").write_bytes(b"not shipped")
    export_recall_model(model, tmp_path / "export", card="# card\n")
    names = {p.name for p in (tmp_path / "export").iterdir()}
    assert "optimizer.pt" not in names and {"model.safetensors", "config.json", "README.md"} <= names
    assert any(name.endswith("_hour_llava.py") for name in names)
    assert json.loads((tmp_path / "export" / "config.json").read_text())["use_memaug"] is True
    assert (tmp_path / "export" / "README.md").read_text() == "# card\n"

"""Push to and pull from a local server that speaks the Hub's HTTP API, with the unpatched client.

The parent converts a tiny official checkpoint, then a first child (HF_ENDPOINT -> the mock Hub) pushes it with
`python -m modeling_hour_llava.push` (model and processor `push_to_hub`) and pushes a training checkpoint folder with
and without its optimizer state. A second child, where this package cannot be imported and the cache is empty, loads
model and processor by repo id with `trust_remote_code=True` and runs them; its logits and token ids must equal the
parent's from the local folder.
"""

from __future__ import annotations

import json
import shutil
import textwrap

import torch
from isolated import BLOCK_PACKAGE
from mock_hub import mock_hub, run_hub_client  # noqa: F401
from safetensors import safe_open
from test_convert import (
    TINY_VISION_HEADS,
    official_config,
    official_state_dict,
    perturbed,
    stored_names,
    token_settings,
    write_source,
)

from hour_llava_testing.tiny_tokenizer import build_tokenizer
from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor, num_video_tokens
from modeling_hour_llava.convert import convert

from conftest import tiny_model

REPO = "tester/hour-llava-tiny"
CHECKPOINT_REPO = "tester/hour-llava-run"
SOURCE_REPO = "tester/hourllava-official-s3"
TRAINING_ONLY = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "global_step10/zero_pp_rank_0_mp_rank_00.pt"]

PUSH = (
    textwrap.dedent(
        """
    import glob, json, os, sys
    from huggingface_hub import HfApi
    from modeling_hour_llava.convert import main as convert_main
    from modeling_hour_llava.push import main

    model_dir, checkpoint_dir, source_dir, converted_dir = sys.argv[1:5]
    HfApi().create_repo("SOURCE_REPO_ID")
    HfApi().upload_folder(folder_path=source_dir, repo_id="SOURCE_REPO_ID")
    heads = json.dumps({"num_attention_heads": 2})
    assert convert_main(["SOURCE_REPO_ID", converted_dir, "--from", "official", "--vision-config", heads]) == 0
    assert main([model_dir, "REPO_ID", "--max-shard-size", "200KB"]) == 0
    assert main([checkpoint_dir, "RUN_REPO_ID", "--checkpoint", "--path-in-repo", "checkpoint-10"]) == 0
    assert main([checkpoint_dir, "RUN_REPO_ID", "--checkpoint", "--include-optimizer", "--revision", "full"]) == 0
    api = HfApi()
    print(json.dumps({
        "model": sorted(api.list_repo_files("REPO_ID")),
        "checkpoint": sorted(api.list_repo_files("RUN_REPO_ID")),
        "full": sorted(api.list_repo_files("RUN_REPO_ID", revision="full")),
        "fetched": sorted(os.listdir(glob.glob(os.environ["HF_HUB_CACHE"] + "/models--*official*/snapshots/*")[0])),
    }))
    """
    )
    .replace("RUN_REPO_ID", CHECKPOINT_REPO)
    .replace("SOURCE_REPO_ID", SOURCE_REPO)
    .replace("REPO_ID", REPO)
)

PULL = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    inputs = torch.load(sys.argv[1])
    model = AutoModelForImageTextToText.from_pretrained("REPO_ID", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained("REPO_ID", trust_remote_code=True)
    with torch.no_grad():
        logits = model(**inputs["forward"]).logits
    ids = processor(text=inputs["text"], return_tensors="pt")["input_ids"]
    torch.save({"logits": logits, "ids": ids}, sys.argv[2])
    print(json.dumps({
        "model": type(model).__module__, "processor": type(processor).__module__,
        "cache": sorted(os.listdir(os.environ["HF_HUB_CACHE"])),
    }))
    """
).replace("REPO_ID", REPO)


def load_tensor(folder, name: str) -> torch.Tensor:
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            if name in handle.keys():
                return handle.get_tensor(name)
    raise KeyError(name)


def last_json(process) -> dict:
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_push_then_pull_by_repo_id_in_a_fresh_process(mock_hub, tmp_path):  # noqa: F811 - the fixture
    tokenizer = build_tokenizer()
    model = perturbed(tiny_model(seed=7, **token_settings(tokenizer)), seed=8)
    write_source(tmp_path / "src", official_state_dict(model, False), official_config(model, False), tokenizer)
    converted = tmp_path / "converted"
    convert(str(tmp_path / "src"), converted, vision_config=TINY_VISION_HEADS, repo_id=REPO)
    checkpoint = tmp_path / "checkpoint-10"
    shutil.copytree(converted, checkpoint)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 10}')
    for name in TRAINING_ONLY:
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_bytes(b"state")

    torch.save({"not": "loaded"}, tmp_path / "src" / "pytorch_model.bin")  # a pickle beside the safetensors
    push_args = [str(converted), str(checkpoint), str(tmp_path / "src"), str(tmp_path / "from_hub")]
    pushed = last_json(run_hub_client(mock_hub, PUSH, push_args, tmp_path / "push"))
    assert "pytorch_model.bin" not in pushed["fetched"] and "config.json" in pushed["fetched"]
    assert "base_model: " + SOURCE_REPO in (tmp_path / "from_hub" / "README.md").read_text()
    for name in stored_names(converted):  # converting from the repo id gives the same tensors
        assert torch.equal(load_tensor(tmp_path / "from_hub", name), load_tensor(converted, name)), name
    assert {"README.md", "config.json", "modeling_hour_llava.py", "processor_config.json", "tokenizer.json"} <= set(
        pushed["model"]
    )
    assert sum(name.endswith(".safetensors") for name in pushed["model"]) > 1  # sharded at 200KB
    assert "checkpoint-10/trainer_state.json" in pushed["checkpoint"]
    assert not any(name.split("/", 1)[1] in TRAINING_ONLY for name in pushed["checkpoint"] if "/" in name)
    assert set(TRAINING_ONLY) <= set(pushed["full"])
    card = mock_hub.store.read(mock_hub.store.resolve(mock_hub.store.repo("model", REPO), "main").files["README.md"])
    assert b"pipeline_tag: video-text-to-text" in card  # push_to_hub kept the converter's card

    local = HourLlavaForConditionalGeneration.from_pretrained(converted).eval()
    frames = torch.randn(5, 3, 140, 140, generator=torch.Generator().manual_seed(0))
    video = local.config.video_token_index
    ids = torch.tensor([[5, 6] + [video] * num_video_tokens(5, local.config) + [7, 8]])
    forward = {"input_ids": ids, "pixel_values_videos": frames, "video_num_frames": torch.tensor([5])}
    text = "What happens in the video? Answer with the option's letter."
    torch.save({"forward": forward, "text": text}, tmp_path / "inputs.pt")
    pull_args = [str(tmp_path / "inputs.pt"), str(tmp_path / "pulled.pt")]
    pulled = last_json(run_hub_client(mock_hub, PULL, pull_args, tmp_path / "pull", prelude=BLOCK_PACKAGE))
    assert pulled["model"].startswith("transformers_modules.") and pulled["processor"].startswith(
        "transformers_modules."
    )
    assert pulled["cache"] and all(REPO.replace("/", "--") in name for name in pulled["cache"] if "--" in name)
    result = torch.load(tmp_path / "pulled.pt")
    with torch.no_grad():
        torch.testing.assert_close(result["logits"], local(**forward).logits, rtol=0, atol=0)
    assert torch.equal(
        result["ids"], HourLlavaProcessor.from_pretrained(converted)(text=text, return_tensors="pt")["input_ids"]
    )

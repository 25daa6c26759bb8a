"""A saved checkpoint loads with `trust_remote_code=True` in a process that cannot import this package.

The parent saves two tiny checkpoints (untied and tied word embeddings) and a fixed video input, then starts a fresh
interpreter whose `sys.meta_path` refuses `modeling_hour_llava` before anything else is imported, with empty
HF_HOME / HF_MODULES_CACHE folders. The child loads each checkpoint through every Auto class of `auto_map`, runs a
forward and a greedy `generate`, and writes its results; the parent compares them with its own in-process results.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from isolated import run_isolated

from modeling_hour_llava import num_video_tokens

from conftest import tiny_model, video_prompt

NUM_FRAMES = 5
MAX_NEW_TOKENS = 5
AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel")
CHECKPOINTS = ("untied", "tied")

CHILD_SCRIPT = textwrap.dedent(
    """
    import json
    import os

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    out_dir = sys.argv[1]
    inputs = torch.load(os.path.join(out_dir, "inputs.pt"))
    forward_inputs = dict(
        input_ids=inputs["input_ids"],
        pixel_values_videos=inputs["frames"],
        video_num_frames=inputs["video_num_frames"],
        attention_mask=inputs["attention_mask"],
        memaug_query_mask=inputs["memaug_query_mask"],
    )
    factories = {
        "AutoModelForImageTextToText": AutoModelForImageTextToText,
        "AutoModelForCausalLM": AutoModelForCausalLM,
        "AutoModel": AutoModel,
    }
    report = {"checkpoints": {}}
    tensors = {}
    for name in sys.argv[2:]:
        path = os.path.join(out_dir, name)
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        entry = {"config_module": type(config).__module__, "config_class": type(config).__name__, "models": {}}
        for factory_name, factory in factories.items():
            model = factory.from_pretrained(path, trust_remote_code=True).eval()
            info = {"module": type(model).__module__, "class": type(model).__name__, "training": model.training}
            with torch.no_grad():
                output = model(**forward_inputs)
            if factory_name == "AutoModel":
                tensors[f"{name}/{factory_name}/hidden"] = output.last_hidden_state
            else:
                tensors[f"{name}/{factory_name}/logits"] = output.logits
                tensors[f"{name}/{factory_name}/generated"] = model.generate(
                    **forward_inputs, max_new_tokens=int(inputs["max_new_tokens"]), do_sample=False
                )
                embeddings = model.get_input_embeddings().weight
                head = model.get_output_embeddings().weight
                info["head_equals_embeddings"] = bool(torch.equal(head, embeddings))
                info["head_shares_embeddings"] = head.data_ptr() == embeddings.data_ptr()
            entry["models"][factory_name] = info
        report["checkpoints"][name] = entry
    report["package_in_sys_modules"] = sorted(
        m for m in sys.modules if m == "modeling_hour_llava" or m.startswith("modeling_hour_llava.")
    )
    torch.save(tensors, os.path.join(out_dir, "child_tensors.pt"))
    with open(os.path.join(out_dir, "child_report.json"), "w") as handle:
        json.dump(report, handle)
    """
)


def _checkpoint_models():
    return {
        "untied": tiny_model(seed=0),
        "tied": tiny_model(seed=1, tie_word_embeddings=True),
    }


@pytest.fixture(scope="module")
def remote_run(tmp_path_factory):
    """Save the checkpoints and inputs, run the child once, and return (parent models, inputs, child results)."""
    out_dir = tmp_path_factory.mktemp("remote_code")
    models = _checkpoint_models()
    for name, model in models.items():
        model.save_pretrained(out_dir / name)

    torch.manual_seed(1234)
    config = models["untied"].config
    input_ids = video_prompt(num_video_tokens(NUM_FRAMES, config), [11, 12, 13], [21, 22, 23, 24])
    inputs = {
        "input_ids": input_ids,
        "frames": torch.randn(NUM_FRAMES, 3, 140, 140),
        "video_num_frames": torch.tensor([NUM_FRAMES]),
        "attention_mask": torch.ones_like(input_ids),
        "memaug_query_mask": (input_ids != config.video_token_id).long(),
        "max_new_tokens": torch.tensor(MAX_NEW_TOKENS),
    }
    torch.save(inputs, out_dir / "inputs.pt")
    hf_home = tmp_path_factory.mktemp("empty_hf_home")
    run_isolated(CHILD_SCRIPT, [str(out_dir), *CHECKPOINTS], out_dir, hf_home)
    report = json.loads((out_dir / "child_report.json").read_text())
    tensors = torch.load(out_dir / "child_tensors.pt")
    return {"models": models, "inputs": inputs, "report": report, "tensors": tensors, "hf_home": hf_home}


def _forward_inputs(inputs):
    return dict(
        input_ids=inputs["input_ids"],
        pixel_values_videos=inputs["frames"],
        video_num_frames=inputs["video_num_frames"],
        attention_mask=inputs["attention_mask"],
        memaug_query_mask=inputs["memaug_query_mask"],
    )


def test_child_cannot_import_the_package(remote_run):
    assert remote_run["report"]["package_in_sys_modules"] == []


def test_remote_code_lands_in_the_fresh_modules_cache(remote_run):
    modules = remote_run["hf_home"] / "modules" / "transformers_modules"
    written = {p.name for p in modules.rglob("*.py")}
    files = ("configuration_hour_llava.py", "modeling_hour_llava.py", "memaug_hour_llava.py", "memory_hour_llava.py")
    for name in files:
        assert name in written, f"{name} not copied into the child's HF_MODULES_CACHE ({sorted(written)})"


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_classes_come_from_transformers_modules(remote_run, checkpoint):
    entry = remote_run["report"]["checkpoints"][checkpoint]
    assert entry["config_module"].startswith("transformers_modules."), entry["config_module"]
    assert entry["config_class"] == "HourLlavaConfig"
    expected = {
        "AutoModelForImageTextToText": "HourLlavaForConditionalGeneration",
        "AutoModelForCausalLM": "HourLlavaForConditionalGeneration",
        "AutoModel": "HourLlavaModel",
    }
    for factory_name, cls in expected.items():
        info = entry["models"][factory_name]
        assert info["module"].startswith("transformers_modules."), (factory_name, info["module"])
        assert info["module"].endswith(".modeling_hour_llava"), (factory_name, info["module"])
        assert info["class"] == cls
        assert info["training"] is False


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_remote_logits_and_generation_match_in_process(remote_run, checkpoint):
    model, inputs = remote_run["models"][checkpoint], remote_run["inputs"]
    tensors = remote_run["tensors"]
    forward_inputs = _forward_inputs(inputs)
    with torch.no_grad():
        logits = model(**forward_inputs).logits
        hidden = model.model(**forward_inputs).last_hidden_state
    generated = model.generate(**forward_inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + MAX_NEW_TOKENS

    for factory_name in ("AutoModelForImageTextToText", "AutoModelForCausalLM"):
        torch.testing.assert_close(tensors[f"{checkpoint}/{factory_name}/logits"], logits, atol=1e-5, rtol=0)
        assert torch.equal(tensors[f"{checkpoint}/{factory_name}/generated"], generated), factory_name
    torch.testing.assert_close(tensors[f"{checkpoint}/AutoModel/hidden"], hidden, atol=1e-5, rtol=0)


def test_tied_embeddings_survive_save_and_remote_load(remote_run):
    parent = remote_run["models"]["tied"]
    assert parent.config.tie_word_embeddings is True
    assert torch.equal(parent.lm_head.weight, parent.get_input_embeddings().weight)
    for factory_name in ("AutoModelForImageTextToText", "AutoModelForCausalLM"):
        info = remote_run["report"]["checkpoints"]["tied"]["models"][factory_name]
        assert info["head_equals_embeddings"], factory_name
        assert info["head_shares_embeddings"], factory_name
    # The control: the untied checkpoint keeps a separate head, so the check above can fail.
    for factory_name in ("AutoModelForImageTextToText", "AutoModelForCausalLM"):
        info = remote_run["report"]["checkpoints"]["untied"]["models"][factory_name]
        assert not info["head_equals_embeddings"], factory_name

"""Train Hour-LLaVA, one stage per command, on TRL's SFTTrainer.

    # Stage 3 on VideoMarathon (grouped Parquet from dataset_builder) + short videos, 3:1, on 8 GPUs:
    accelerate launch --config_file hour_llava_training/configs/accelerate/multi_gpu.yaml train.py \
        --stage stage3 --model_name_or_path ./hour-llava-s2 \
        --dataset ./videomarathon-grouped:3 ./llava-video-178k:1 \
        --media_root /data/videos --feature_dir /data/features --output_dir ./hour-llava-s3

    # The same on one CPU with a tiny random model (a smoke run):
    python train.py --stage stage3 --tiny --dataset ./synthetic --media_root ./synthetic/videos \
        --output_dir /tmp/run --max_steps 4

Every `SFTConfig` / `TrainingArguments` flag works (`--save_steps`, `--resume_from_checkpoint`, `--report_to
tensorboard`, `--push_to_hub`, `--gradient_checkpointing`, `--bf16`, `--deepspeed`, ...). The stage sets what is
trained and the defaults of the rest (learning rates, cosine schedule, 3% warmup, no weight decay, 1 epoch); a flag
given on the command line wins. `--lr_mode released` trains every group at the one rate the released checkpoints
actually got; `nominal` (default) uses the paper's per-module rates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from datasets import load_dataset
from transformers import AutoModelForImageTextToText, AutoProcessor, HfArgumentParser
from trl import SFTConfig

from dataset_builder.chat import CHAT_FEATURES, modality_of
from dataset_builder.mixtures import build_mixture
from hour_llava_testing.tiny_model import write_tiny_checkpoint
from hour_llava_training import STAGES, HourLlavaCollator, HourLlavaSFTTrainer, apply_stage
from hour_llava_training.stages import LR_MODES, MODULE_GROUPS, module_group

logger = logging.getLogger("train")
MERGED_DIR = "merged"


@dataclass
class HourLlavaArguments:
    stage: str = field(default="stage3", metadata={"help": f"one of {sorted(STAGES)}", "choices": sorted(STAGES)})
    model_name_or_path: str | None = field(default=None, metadata={"help": "checkpoint folder or Hub id"})
    tiny: bool = field(default=False, metadata={"help": "start from a tiny random model (smoke runs, tests)"})
    lr_mode: str = field(default="nominal", metadata={"help": "per-module rates or the released single rate"})
    dataset: list[str] = field(
        default_factory=list,
        metadata={"help": "PATH_OR_HUB_ID[:WEIGHT] ...: chat-schema datasets (dataset_builder), mixed by weight"},
    )
    dataset_split: str = field(default="train")
    streaming: bool = field(default=False, metadata={"help": "stream the datasets (for data larger than the disk)"})
    media_root: str | None = field(default=None, metadata={"help": "folder that relative media paths are under"})
    feature_dir: str | None = field(
        default=None,
        metadata={
            "help": "cached memory repositories: dataset_builder.extract_features' --output-dir for the videos "
            "under --media_root (<dir>/<video path without suffix>.safetensors); videos without one are decoded"
        },
    )
    max_train_samples: int | None = field(default=None)
    use_peft: bool = field(default=False, metadata={"help": "LoRA on the decoder; MemAug and projector fully trained"})
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.05)
    lora_target_modules: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    )
    merge_lora: bool = field(
        default=False, metadata={"help": f"also write the LoRA-merged model to OUTPUT_DIR/{MERGED_DIR}"}
    )
    tiny_min_frames: int = field(default=128, metadata={"help": "with --tiny: the fewest frames a video gives"})


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` whose `trainer_state.json` (the Trainer writes it last) is whole and says step N.

    A run killed while saving leaves a checkpoint without it (or with a torn one); that checkpoint is passed over.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-")[1]) for name in os.listdir(output_dir) if name.split("-")[-1].isdigit()),
        reverse=True,
    )
    for step in steps:
        folder = os.path.join(output_dir, f"checkpoint-{step}")
        try:
            with open(os.path.join(folder, "trainer_state.json")) as handle:
                if json.load(handle).get("global_step") == step:
                    return folder
        except (OSError, ValueError):
            logger.warning("passing over incomplete checkpoint %s", folder)
    return None


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint auto` (or `true`/`last`): the latest complete checkpoint, or a fresh start."""
    if value is None or str(value).lower() not in ("auto", "true", "last"):
        return value
    return latest_complete_checkpoint(output_dir)


def stage_defaults(stage_name: str) -> dict:
    """The stage's values for SFTConfig fields the user did not set."""
    stage = STAGES[stage_name]
    return {
        "learning_rate": stage.released_learning_rate,
        "lr_scheduler_type": stage.lr_scheduler_type,
        "warmup_steps": stage.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": stage.weight_decay,
        "max_grad_norm": stage.max_grad_norm,
        "num_train_epochs": stage.num_train_epochs,
        "bf16": torch.cuda.is_available(),
        "gradient_checkpointing": torch.cuda.is_available(),
        "logging_steps": 1,
        "report_to": "none",
        # DDP must look for unused parameters when a trained module can sit out a step: the vision tower (stage 2)
        # does for text-only batches and cached features. Projector, newline and MemAug never do (the model keeps
        # them in the graph), and the tower's post_layernorm is frozen (`NEVER_TRAINED`), so the other stages skip
        # the search.
        "ddp_find_unused_parameters": "vision_tower" in stage.trainable,
    }


def parse_arguments(argv: list[str] | None = None) -> tuple[HourLlavaArguments, SFTConfig]:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", default="stage3", choices=sorted(STAGES))
    stage_name = pre.parse_known_args(argv)[0].stage
    parser = HfArgumentParser((HourLlavaArguments, SFTConfig))
    parser.set_defaults(**stage_defaults(stage_name))
    script_args, config = parser.parse_args_into_dataclasses(argv)
    # What the video collator needs from TRL (see docs): our own collator, every column kept, no truncation
    # (it would cut <video> placeholders), no TRL-side preparation.
    config.remove_unused_columns = False
    config.dataset_kwargs = {"skip_prepare_dataset": True}
    config.max_length = None
    if not any(arg.startswith(("--include_num_input_tokens_seen", "--include-num-input-tokens-seen")) for arg in argv):
        # Real tokens, the same count however the batch is split (the parser only takes booleans for this flag).
        config.include_num_input_tokens_seen = "non_padding"
    if config.gradient_checkpointing and not config.gradient_checkpointing_kwargs:
        config.gradient_checkpointing_kwargs = {"use_reentrant": False}
    if not script_args.dataset:
        parser.error("give at least one --dataset")
    if not (script_args.model_name_or_path or script_args.tiny):
        parser.error("give --model_name_or_path or --tiny")
    return script_args, config


def parse_dataset_spec(spec: str) -> tuple[str, float]:
    """`PATH_OR_HUB_ID[:WEIGHT]` -> (path, weight); the weight defaults to 1."""
    path, _, weight = spec.rpartition(":")
    try:
        return (path, float(weight)) if path else (spec, 1.0)
    except ValueError:
        return spec, 1.0


def as_chat_rows(dataset, name: str):
    """A dataset with a `messages` column in the chat schema of `dataset_builder.chat` (id, dataset, modality
    added where a builder's output lacks them)."""
    if "messages" not in (dataset.column_names or []):
        raise ValueError(f"dataset {name!r} has no 'messages' column; build it with dataset_builder")
    missing = [column for column in CHAT_FEATURES if column not in dataset.column_names]
    if not missing:
        return dataset

    def add(row: dict, index: int) -> dict:
        return {"id": str(row.get("id", index)), "dataset": name, "modality": modality_of(row["messages"])}

    return dataset.map(add, with_indices=True)


def load_mixture(specs: list[str], split: str, streaming: bool, seed: int, max_samples: int | None):
    """`PATH[:WEIGHT]` entries -> one dataset of chat rows, mixed by weight (`dataset_builder.mixtures`)."""
    weights, sources = {}, {}
    for spec in specs:
        path, weight = parse_dataset_spec(spec)
        sources[path] = as_chat_rows(load_dataset(path, split=split, streaming=streaming), path)
        weights[path] = weight
    mixed = sources[path] if len(sources) == 1 else build_mixture(weights, sources, seed=seed, streaming=streaming)
    if max_samples is not None:
        mixed = mixed.take(max_samples) if streaming else mixed.select(range(min(max_samples, len(mixed))))
    return mixed


def load_model_and_processor(script_args: HourLlavaArguments, config: SFTConfig):
    path = script_args.model_name_or_path
    if script_args.tiny:
        path = os.path.join(config.output_dir, "tiny-init")
        with PartialState().main_process_first():
            if PartialState().is_main_process and not os.path.isfile(os.path.join(path, "config.json")):
                write_tiny_checkpoint(path, seed=config.seed, video_min_frames=script_args.tiny_min_frames)
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True, dtype=dtype)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    return model, processor


def peft_config(script_args: HourLlavaArguments):
    if not script_args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        lora_dropout=script_args.lora_dropout,
        target_modules=script_args.lora_target_modules,
        modules_to_save=["memaug", "multi_modal_projector"],
        task_type="CAUSAL_LM",
    )


def trainable_counts(model) -> dict[str, int]:
    """Trainable parameters per module group (LoRA adapters count in the group of the module they adapt)."""
    counts = dict.fromkeys(MODULE_GROUPS, 0)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            counts[module_group(name)] += parameter.numel()
    return counts


def save_merged(trainer, processor, folder: str) -> None:
    """LoRA merged into the base: a complete remote-code checkpoint (weights, config, code, processor) in `folder`.

    Runs last: `merge_and_unload` folds the adapters into the model in place. Not for ZeRO-3 (sharded weights):
    merge the saved adapter afterwards with `PeftModel.from_pretrained(base, adapter).merge_and_unload()`."""
    if not trainer.is_world_process_zero():
        return
    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    merged.save_pretrained(folder)
    processor.save_pretrained(folder)
    logger.info("merged LoRA model written to %s", folder)


def peak_memory_mb() -> dict[str, float]:
    """This process's peak resident memory and, on CUDA, peak allocated GPU memory, in MiB."""
    peaks = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB on Linux
    if torch.cuda.is_available():
        peaks["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


def write_summary(trainer, started: float, trainable: dict[str, int], output_dir: str) -> dict:
    """`training_summary.json` (atomic, main process): steps, tokens (non-padding, all processes), time, speed,
    peak memory (this process), trainable parameters, skipped samples and cache hits (this process's collator), and
    the loss curve. The training speed covers this run's steps (a resumed run's tokens include the earlier ones)."""
    state = trainer.state
    train_log = next((log for log in reversed(state.log_history) if "train_runtime" in log), {})
    train_seconds = train_log.get("train_runtime")
    summary = {
        "steps": state.global_step,
        "epochs": state.epoch,
        "tokens_seen": state.num_input_tokens_seen,
        "seconds": round(time.time() - started, 1),
        "train_seconds": train_seconds,
        "train_samples_per_second": train_log.get("train_samples_per_second"),
        "train_tokens_per_second": state.num_input_tokens_seen / train_seconds if train_seconds else None,
        **peak_memory_mb(),
        "trainable_parameters": trainable,
        "skipped_samples": dict(getattr(trainer.data_collator, "skipped", {})),
        "cached_features_used": getattr(trainer.data_collator, "feature_hits", 0),
        "losses": [log["loss"] for log in state.log_history if "loss" in log],
    }
    if trainer.is_world_process_zero():
        tmp = os.path.join(output_dir, ".training_summary.json.tmp")
        with open(tmp, "w") as handle:
            json.dump(summary, handle, indent=2)
        os.replace(tmp, os.path.join(output_dir, "training_summary.json"))
    return summary


def main(argv: list[str] | None = None) -> dict:
    script_args, config = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.time()
    stage = STAGES[script_args.stage]
    if script_args.lr_mode not in LR_MODES:
        raise ValueError(f"--lr_mode {script_args.lr_mode!r}; expected one of {LR_MODES}")

    # Model, processor and what this stage trains.
    model, processor = load_model_and_processor(script_args, config)
    trainable = apply_stage(model, stage)
    logger.info("%s (%s): trainable %s", stage.name, stage.description, {g: trainable[g] for g in MODULE_GROUPS})

    # Data: chat rows, mixed by weight; the collator decodes (or reads cached features) and masks the labels.
    train_dataset = load_mixture(
        script_args.dataset,
        script_args.dataset_split,
        script_args.streaming,
        config.seed,
        script_args.max_train_samples,
    )
    collator = HourLlavaCollator(processor, media_root=script_args.media_root, feature_dir=script_args.feature_dir)

    # Train.
    trainer = HourLlavaSFTTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,
        peft_config=peft_config(script_args),
        stage=stage,
        lr_mode=script_args.lr_mode,
    )
    trainable = trainable_counts(trainer.model)  # after PEFT wrapped the model (LoRA adapters, frozen base)
    trainer.train(resume_from_checkpoint=resolve_resume(config.resume_from_checkpoint, config.output_dir))

    # Save a complete checkpoint (weights or adapter, config, remote code, processor), pushed if asked; then merged.
    trainer.save_model(config.output_dir)
    summary = write_summary(trainer, started, trainable, config.output_dir)
    logger.info("done: %s", json.dumps(summary))
    if config.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset)
    if script_args.use_peft and script_args.merge_lora:
        save_merged(trainer, processor, os.path.join(config.output_dir, MERGED_DIR))
    return summary


if __name__ == "__main__":
    main()

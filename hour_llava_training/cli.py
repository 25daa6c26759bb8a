"""Train Hour-LLaVA, one stage per command, on TRL's SFTTrainer.

    # Stage 3 on VideoMarathon (grouped Parquet from dataset_builder) + short videos, 3:1, on 8 GPUs:
    accelerate launch --config_file hour_llava_training/configs/accelerate/multi_gpu.yaml train.py \
        --stage stage3 --model_name_or_path ./hour-llava-s2 \
        --dataset ./videomarathon-grouped:3 ./llava-video-178k:1 \
        --media_root /data/videos --feature_dir /data/features --output_dir ./hour-llava-s3

    # The same on one CPU with a tiny random model and the synthetic data: docs/training.md, "Try it on a CPU".

Every `SFTConfig` / `TrainingArguments` flag works (`--save_steps`, `--resume_from_checkpoint`, `--report_to
tensorboard`, `--push_to_hub`, `--gradient_checkpointing`, `--bf16`, `--deepspeed`, ...). The stage sets what is
trained and the defaults of the rest (learning rates, cosine schedule, 3% warmup, no weight decay, 1 epoch); a flag
given on the command line wins. `--lr_mode released` trains every group at the one rate the released checkpoints
actually got; `nominal` (default) uses the paper's per-module rates.

Broken samples are skipped and counted (`--max_broken_fraction` stops a run with too many), steps with non-finite
gradients are skipped (`--max_nonfinite_steps`), checkpoints count only when complete, and the final output appears
whole or not at all (`hour_llava_training.trainer`, docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import AutoModelForImageTextToText, AutoProcessor, HfArgumentParser
from trl import SFTConfig

from dataset_builder.chat import CHAT_FEATURES, modality_of
from dataset_builder.loading import load_dataset_folder
from dataset_builder.mixtures import build_mixture
from hour_llava_testing.tiny_model import write_tiny_checkpoint
from hour_llava_training import STAGES, HourLlavaDataCollator, HourLlavaSFTTrainer, apply_stage
from hour_llava_training.accounting import EXAMPLES_KEPT
from hour_llava_training.checkpoints import MARKER, checkpoint_problem, latest_complete_checkpoint, publish
from hour_llava_training.model_card import ModelCardInfo, base_model_license
from hour_llava_training.stages import LR_MODES, MODULE_GROUPS, module_group, parameter_groups
from hour_llava_training.trainer import STAGING
from modeling_hour_llava.convert import PICKLE_SUFFIXES

logger = logging.getLogger("train")
MERGED_DIR = "merged"
SUMMARY_NAME = "training_summary.json"


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
    max_broken_fraction: float = field(
        default=0.01,
        metadata={
            "help": "broken samples (undecodable video, broken feature file, bad path, ...) are skipped and counted; "
            "the run stops, naming them, once more than this fraction of the run's samples were broken"
        },
    )
    max_nonfinite_steps: int = field(
        default=8,
        metadata={"help": "steps with NaN/inf gradients are skipped (no weight changes); more than this many stop"},
    )
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "also load .bin (pickle) model weights (torch.load(weights_only=True)); else safetensors"},
    )


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint auto` (or `true`/`last`): the latest complete checkpoint (torn ones passed over), or
    a fresh start. A named checkpoint must be complete (one without a marker, from an older version, is trusted)."""
    if value is None:
        return None
    if str(value).lower() in ("auto", "true", "last"):
        return latest_complete_checkpoint(output_dir)
    problem = checkpoint_problem(value)
    if problem and os.path.isfile(os.path.join(value, MARKER)):
        raise ValueError(f"--resume_from_checkpoint {value}: incomplete checkpoint ({problem}); pick another")
    if problem:
        logger.warning("resuming from %s without a completion marker (%s)", value, problem)
    return value


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
    if not 0 <= script_args.max_broken_fraction <= 1:
        parser.error(f"--max_broken_fraction {script_args.max_broken_fraction}: give a fraction between 0 and 1")
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
    """`PATH[:WEIGHT]` entries -> one dataset of chat rows, mixed by weight (`dataset_builder.mixtures`). A local
    folder is read as it is now, never from the cache of an earlier folder (`dataset_builder.loading`)."""
    weights, sources = {}, {}
    for spec in specs:
        path, weight = parse_dataset_spec(spec)
        sources[path] = as_chat_rows(load_dataset_folder(path, split=split, streaming=streaming), path)
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
                staging = f"{path}{STAGING}"  # written whole, then renamed: a kill leaves no half model here
                shutil.rmtree(staging, ignore_errors=True)
                write_tiny_checkpoint(staging, seed=config.seed, video_min_frames=script_args.tiny_min_frames)
                shutil.rmtree(path, ignore_errors=True)
                os.replace(staging, path)
    refuse_pickled_weights(path, script_args.allow_pickle)
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(
        path, trust_remote_code=True, dtype=dtype, use_safetensors=None if script_args.allow_pickle else True
    )
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    return model, processor


def refuse_pickled_weights(path: str, allow_pickle: bool) -> None:
    """A local checkpoint with only `.bin` / `.pt` weights (pickles) loads only with `--allow_pickle`."""
    if allow_pickle or not os.path.isdir(path):
        return
    names = os.listdir(path)
    pickles = [name for name in names if name.endswith(PICKLE_SUFFIXES)]
    if pickles and not any(name.endswith(".safetensors") for name in names):
        raise ValueError(
            f"{path} holds pickled weights ({', '.join(pickles)}) and no "
            "safetensors; convert them (modeling_hour_llava.convert) or pass --allow_pickle if you trust the files"
        )


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
    staging = f"{folder}{STAGING}"
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging)
    processor.save_pretrained(staging)
    publish(staging, folder)
    logger.info("merged LoRA model written to %s", folder)


def peak_memory_mb() -> dict[str, float]:
    """This process's peak resident memory and, on CUDA, peak allocated GPU memory, in MiB."""
    peaks = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB on Linux
    if torch.cuda.is_available():
        peaks["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


def training_summary(trainer, started: float, trainable: dict[str, int]) -> dict:
    """What `training_summary.json` holds: steps, tokens (non-padding, all processes), time, speed, peak memory (this
    process), trainable parameters, rows drawn, skipped samples by reason (and the first of them by name) and cached
    features used (all processes and workers, the run before a resume included), steps skipped for non-finite
    gradients, and the loss curve. The training speed covers this run's steps (a resumed run's tokens include the
    earlier ones). A collective: every process calls it."""
    state = trainer.state
    train_log = next((log for log in reversed(state.log_history) if "train_runtime" in log), {})
    train_seconds = train_log.get("train_runtime")
    totals = trainer.report_totals()
    return {
        "steps": state.global_step,
        "epochs": state.epoch,
        "tokens_seen": state.num_input_tokens_seen,
        "seconds": round(time.time() - started, 1),
        "train_seconds": train_seconds,
        "train_samples_per_second": train_log.get("train_samples_per_second"),
        "train_tokens_per_second": state.num_input_tokens_seen / train_seconds if train_seconds else None,
        **peak_memory_mb(),
        "trainable_parameters": trainable,
        "rows_drawn": totals["rows"],
        "skipped_samples": totals["skipped_samples"],
        "skipped_sample_examples": trainer.skipped_examples()[:EXAMPLES_KEPT],
        "cached_features_used": totals["cached_features_used"],
        "nonfinite_steps": trainer.nonfinite_steps,
        "distributed_type": str(trainer.accelerator.distributed_type.value),
        "num_processes": trainer.accelerator.num_processes,
        "losses": [log["loss"] for log in state.log_history if "loss" in log],
    }


def model_card_info(script_args: HourLlavaArguments, config: SFTConfig, stage, model) -> ModelCardInfo:
    """What the output's model card says about this run (`hour_llava_training.model_card`)."""
    base = script_args.model_name_or_path or "a tiny random Hour-LLaVA (--tiny)"
    groups = parameter_groups(model, stage, script_args.lr_mode, config.learning_rate)
    rates = {f"learning rate ({group['group_name']})": group["lr"] for group in groups}
    hyperparameters = {
        "stage": f"{stage.name} (--lr_mode {script_args.lr_mode})",
        **rates,
        "schedule": f"{config.lr_scheduler_type}, warmup {config.warmup_steps}",
        "epochs / max steps": f"{config.num_train_epochs} / {config.max_steps}",
        "batch": f"{config.per_device_train_batch_size} per device x {config.gradient_accumulation_steps} "
        f"accumulation x {config.world_size} processes",
        "max grad norm": config.max_grad_norm,
        "weight decay": config.weight_decay,
        "precision": "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        "seed": config.seed,
    }
    if script_args.use_peft:
        lora = script_args
        hyperparameters["LoRA"] = f"r {lora.lora_r}, alpha {lora.lora_alpha}, dropout {lora.lora_dropout}"
    merged = script_args.use_peft and script_args.merge_lora
    output = os.path.abspath(os.path.join(config.output_dir, MERGED_DIR) if merged else config.output_dir)
    return ModelCardInfo(
        base_model=base,
        stage=stage.name,
        stage_description=stage.description,
        datasets=[parse_dataset_spec(spec) for spec in script_args.dataset],
        trainable=trainable_counts(model),
        hyperparameters=hyperparameters,
        model_id=config.hub_model_id if config.push_to_hub and config.hub_model_id else output,
        license=base_model_license(script_args.model_name_or_path) if script_args.model_name_or_path else "other",
    )


def run_training(argv: list[str] | None = None) -> dict:
    """Train one stage as the command line says; returns the training summary (also in OUTPUT/training_summary.json)."""
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

    # Data: chat rows, mixed by weight; the collator decodes (or reads cached features), masks the labels and skips
    # (and counts) broken samples.
    train_dataset = load_mixture(
        script_args.dataset,
        script_args.dataset_split,
        script_args.streaming,
        config.seed,
        script_args.max_train_samples,
    )
    collator = HourLlavaDataCollator(processor, media_root=script_args.media_root, feature_dir=script_args.feature_dir)

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
        max_broken_fraction=script_args.max_broken_fraction,
        max_nonfinite_steps=script_args.max_nonfinite_steps,
    )
    trainable = trainable_counts(trainer.model)  # after PEFT wrapped the model (LoRA adapters, frozen base)
    trainer.model_card = model_card_info(script_args, config, stage, trainer.model)
    trainer.train(resume_from_checkpoint=resolve_resume(config.resume_from_checkpoint, config.output_dir))

    # The final output, published whole (weights or adapter, config, remote code, processor, model card, summary);
    # pushed if asked; then merged.
    summary = training_summary(trainer, started, trainable)
    trainer.final_files = {SUMMARY_NAME: summary}
    trainer.save_model(config.output_dir)
    logger.info("done: %s", json.dumps(summary))
    if config.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset)
    if script_args.use_peft and script_args.merge_lora:
        save_merged(trainer, processor, os.path.join(config.output_dir, MERGED_DIR))
    return summary


def main(argv: list[str] | None = None) -> int:
    """The `hour-llava-train` / `train.py` command: exit status 0 after a finished run (errors raise)."""
    run_training(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SFTTrainer with Hour-LLaVA's per-module learning rates, and training that survives its data and its machine:
broken samples counted over workers and processes (and a limit), non-finite steps skipped, checkpoints complete only
when their marker says so, a final output that appears whole or not at all, and a real model card."""

from __future__ import annotations

import json
import logging
import os
import shutil

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import SFTTrainer

from .accounting import RunReport, TooManyBrokenSamples, TooManyNonFiniteSteps, broken_samples_error
from .checkpoints import publish, read_marker, remove_marker, write_marker
from .collator import REPORT_KEY, HourLlavaDataCollator
from .model_card import ModelCardInfo, render_model_card
from .stages import StagePreset, parameter_groups

logger = logging.getLogger(__name__)
STAGING = ".final-staging"  # the final model is written here, then published into the output folder


class HourLlavaSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose optimizer has one parameter group per module group of the stage (each with its rate).

    With DeepSpeed, keep the `optimizer` block out of the DeepSpeed config (ours do): the Trainer then hands this
    optimizer to DeepSpeed and the groups survive, where the reference's per-module rates silently did not.

    max_broken_fraction: the run stops (`TooManyBrokenSamples`, naming the samples) once more samples were skipped
    than this fraction of the samples the run draws (max_steps x global batch). max_nonfinite_steps: optimizer steps
    whose gradients hold NaN or inf are skipped (no weight changes, counted); one more than this stops the run
    (`TooManyNonFiniteSteps`, naming the steps). model_card: what the output's README.md says. final_files: JSON
    files (name -> data) published with the final model (the CLI's `training_summary.json`).
    """

    def __init__(
        self,
        *args,
        stage: StagePreset,
        lr_mode: str = "nominal",
        max_broken_fraction: float = 0.01,
        max_nonfinite_steps: int = 8,
        model_card: ModelCardInfo | None = None,
        **kwargs,
    ):
        self.stage, self.lr_mode = stage, lr_mode
        self.max_broken_fraction, self.max_nonfinite_steps = max_broken_fraction, max_nonfinite_steps
        self.model_card = model_card
        self.final_files: dict[str, object] = {}
        self.run_report = RunReport()
        self.nonfinite_steps: list[int] = []
        self._card_folder: str | None = None
        self._totals: dict = {}
        super().__init__(*args, **kwargs)
        if isinstance(self.data_collator, HourLlavaDataCollator):
            self.data_collator.report_in_batch = True
            if self.data_collator.feature_width is None:
                self.data_collator.feature_width = self.model.config.vision_config.hidden_size

    # -------------------------------------------------------------------------------------------------------------
    # Optimizer: per-module rates; a step with non-finite gradients changes nothing
    # -------------------------------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            groups = parameter_groups(model or self.model, self.stage, self.lr_mode, self.args.learning_rate)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            self.optimizer.register_step_pre_hook(self._skip_non_finite_step)
        return self.optimizer

    def _skip_non_finite_step(self, optimizer, args, kwargs) -> None:
        """Optimizer pre-step hook: if any gradient (on any process) holds NaN or inf, drop every gradient, so the
        optimizer changes no weight and no moment; count the step, and stop after `max_nonfinite_steps`."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        local = [grad.to_local() if hasattr(grad, "to_local") else grad for grad in grads]  # FSDP2 shards
        device = local[0].device if local else self.accelerator.device
        bad = torch.stack([~torch.isfinite(grad).all() for grad in local]).any() if local else torch.tensor(False)
        bad = bad.to(device=device, dtype=torch.float32).reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if not bad.item():
            return None
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        step = self.state.global_step + 1
        self.nonfinite_steps.append(step)
        logger.warning("step %d: NaN or infinite loss or gradients; step skipped, no weight changed", step)
        if len(self.nonfinite_steps) > self.max_nonfinite_steps:
            raise TooManyNonFiniteSteps(
                f"{len(self.nonfinite_steps)} steps had NaN or infinite loss or gradients (steps "
                f"{self.nonfinite_steps}), more than --max_nonfinite_steps {self.max_nonfinite_steps}: lower the "
                "learning rate, or look for broken data in those steps; no checkpoint holds a non-finite weight"
            )
        return None

    # -------------------------------------------------------------------------------------------------------------
    # Broken samples: reported in the batch, summed over processes, limited
    # -------------------------------------------------------------------------------------------------------------
    def training_step(self, model, inputs, *args, **kwargs):
        report = inputs.pop(REPORT_KEY, None)
        if report is not None:
            self.run_report.add(report)
        self.check_broken_samples()
        return super().training_step(model, inputs, *args, **kwargs)

    def report_totals(self) -> dict:
        """Rows drawn, cached features used and skipped samples by reason, over every process (a collective)."""
        self._totals = self.run_report.totals(self.accelerator, self.accelerator.is_main_process)
        return self._totals

    def skipped_examples(self) -> list[dict]:
        """The first skipped samples of every process (`sample`, `reason`, `detail`); a collective."""
        examples = self.run_report.examples
        return gather_object(examples) if self.accelerator.num_processes > 1 else list(examples)

    def planned_samples(self) -> int:
        args = self.args
        global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        return self.state.max_steps * global_batch

    def check_broken_samples(self) -> None:
        totals = self.report_totals()
        skipped = sum(totals["skipped_samples"].values())
        allowed = self.max_broken_fraction * self.planned_samples()
        if skipped <= allowed:
            return
        raise TooManyBrokenSamples(
            broken_samples_error(
                totals, allowed, self.planned_samples(), self.max_broken_fraction, self.skipped_examples()
            )
        )

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if isinstance(resume_from_checkpoint, str):
            self.restore_report(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def restore_report(self, checkpoint: str) -> None:
        """Counts of the run up to `checkpoint` (from its marker), so a resumed run reports the whole run."""
        try:
            marker = read_marker(checkpoint)
        except (OSError, ValueError):
            return
        self.run_report.restored = marker.get("report", {})
        self.nonfinite_steps = list(marker.get("nonfinite_steps", []))

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        skipped = sum(self._totals.get("skipped_samples", {}).values())
        if skipped:
            logs["skipped_samples"] = float(skipped)
        if self.nonfinite_steps:
            logs["nonfinite_steps"] = float(len(self.nonfinite_steps))
        logs.update(self.group_learning_rates(logs.get("learning_rate")))
        super().log(logs, *args, **kwargs)

    def group_learning_rates(self, logged_rate: float | None) -> dict[str, float]:
        """`lr/<group>` of the step just logged. The Trainer logs the first group's rate from before the scheduler
        stepped; every group follows the same schedule factor, so each is that rate times its initial-rate ratio
        (the groups' current `lr` would be the next step's)."""
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        first = groups[0].get("initial_lr") if groups else None
        rates = {}
        for group in groups:
            if not group.get("group_name"):
                continue
            scaled = logged_rate is not None and first and "initial_lr" in group
            rates[f"lr/{group['group_name']}"] = logged_rate * group["initial_lr"] / first if scaled else group["lr"]
        return rates

    # -------------------------------------------------------------------------------------------------------------
    # Saving: checkpoints with a completion marker, an atomic final output, a real model card
    # -------------------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial) -> None:
        """As the Trainer's, then (once every process is done) the completion marker, then the rotation of old
        checkpoints: an older complete checkpoint is only deleted once this one is complete."""
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            remove_marker(folder)
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        self._card_folder = folder
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit, self._card_folder = limit, None
        totals = self.report_totals()
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_marker(folder, self.state.global_step, {"report": totals, "nonfinite_steps": self.nonfinite_steps})
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints and other folders as the Trainer saves them; the output folder itself atomically: everything
        (weights or adapter, config, code, processor, model card, `final_files`) is written to a staging folder,
        then published with `config.json` last (`checkpoints.publish`)."""
        output_dir = output_dir or self.args.output_dir
        if os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir):
            return super().save_model(output_dir, _internal_call)
        staging = os.path.join(output_dir, STAGING)
        if self.args.should_save and os.path.isdir(staging):
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        super().save_model(staging, _internal_call)
        if self.args.should_save:
            self.create_model_card(folder=staging)
            for name, data in self.final_files.items():
                with open(os.path.join(staging, name), "w") as handle:
                    json.dump(data, handle, indent=2)
            publish(staging, output_dir)
        self.accelerator.wait_for_everyone()
        return None

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, folder: str | None = None) -> None:
        """Our card (`model_card.render_model_card`) instead of TRL's generic one, into `folder` (a checkpoint while
        one is saved, else the output folder); TRL's when no `model_card` was given."""
        if self.model_card is None:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return None
        folder = folder or self._card_folder or self.args.output_dir
        os.makedirs(folder, exist_ok=True)
        card = self.model_card
        losses = [log["loss"] for log in self.state.log_history if "loss" in log]
        card.results = {
            "steps": self.state.global_step,
            "final training loss": losses[-1] if losses else None,
            "skipped samples": self._totals.get("skipped_samples") or "none",
            "steps skipped for non-finite gradients": self.nonfinite_steps or "none",
        }
        with open(os.path.join(folder, "README.md"), "w") as handle:
            handle.write(render_model_card(card))
        return None

"""SFTTrainer with Hour-LLaVA's per-module learning rates and a report of skipped samples."""

from __future__ import annotations

from trl import SFTTrainer

from .stages import StagePreset, parameter_groups


class HourLlavaSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose optimizer has one parameter group per module group of the stage (each with its rate).

    With DeepSpeed, keep the `optimizer` block out of the DeepSpeed config (ours do): the Trainer then hands this
    optimizer to DeepSpeed and the groups survive, where the reference's per-module rates silently did not.
    """

    def __init__(self, *args, stage: StagePreset, lr_mode: str = "nominal", **kwargs):
        self.stage, self.lr_mode = stage, lr_mode
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            groups = parameter_groups(model or self.model, self.stage, self.lr_mode, self.args.learning_rate)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        collator = self.data_collator
        skipped = sum(getattr(collator, "skipped", {}).values())
        if skipped:
            logs["skipped_samples"] = float(skipped)
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

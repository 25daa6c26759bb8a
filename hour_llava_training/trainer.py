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
        for group in self.optimizer.param_groups if self.optimizer is not None else []:
            if group.get("group_name"):
                logs[f"lr/{group['group_name']}"] = group["lr"]
        super().log(logs, *args, **kwargs)

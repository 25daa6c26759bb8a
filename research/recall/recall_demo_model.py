"""Train the demo's default model (`checkpoints/hour-llava-recall-tiny`) with the package's own `train.py`, through a
length curriculum on the demo's world (`hour_llava_demo.world`: the recall suite's needle form with pink needles).

    OMP_NUM_THREADS=1 nohup .venv/bin/python research/recall/recall_demo_model.py > .cache/recall-demo.log 2>&1 &

1. The sets of `research/recall/recall_curriculum.py` that the stages and held-out tests name: videos, grouped chat
   rows and the memory repository of every video (features of the shared tower pretrained for the suite's world).
2. A fresh MemAug init (seeded, the shared tower, 16 kept frames: `kept_frames_budget`), then one `train.py` run per
   stage (stage 3 on cached features, AdamW with a cosine schedule per stage, batches of 8 conversations of the two
   needle questions), each starting from the previous stage's model. A checkpoint every `--save-steps` is kept.
3. The learning curve: every kept checkpoint scored on the held-out sets (exact answers, teacher-forced:
   `recall_curriculum.held_out`), cached per checkpoint, written to `--json` with the training losses.

Every step resumes after a kill: finished sets, features and stages are kept, a stage continues from its last
checkpoint, and scored checkpoints are not scored again. Appending a stage (`--stages ... pink-hour:400 pink-hour:200`)
continues from the last finished one; a stage's folder names its position, set and steps, so changing a stage
retrains it and every stage after it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from dataset_builder.media import write_json_atomically  # noqa: E402
from hour_llava_lmms.evaluation import write_atomically  # noqa: E402

DEFAULT_STAGES = ("pink-slow:300", "pink:700", "pink-medium:400", "pink-hour:400")
DEFAULT_TESTS = ("test-pink", "test-pink-hour")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".cache", "recall-demo"))
    parser.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGES), help="NAME:STEPS of recall_curriculum")
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="held-out sets of the curve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kept-frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--save-steps", type=int, default=100, help="a checkpoint (a point of the curve) every N")
    parser.add_argument("--max-videos", type=int, default=0, help="cap every set at this many videos (smoke runs)")
    parser.add_argument("--curve-videos", type=int, default=0, help="score the curve on at most N videos per set")
    parser.add_argument("--curve-demo-videos", type=int, default=10,
                        help="demo videos (30-60 min) asked at the end of every stage")  # fmt: skip
    parser.add_argument(
        "--demo-videos", type=int, default=40, help="held-out demo videos (30-60 min) scored at the end"
    )
    parser.add_argument("--demo-seed", type=int, default=5000, help="seed of the first held-out demo video")
    parser.add_argument("--export-to", default=os.path.join(ROOT, "checkpoints", "hour-llava-recall-tiny"),
                        help="export the trained model here, without code ('' to skip)")  # fmt: skip
    parser.add_argument("--json", default=os.path.join(HERE, "results", "recall_demo_model.json"))
    parser.add_argument("--markdown", default=os.path.join(HERE, "results", "recall_demo_model.md"))
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    args.random_tower = False  # the tower pretrained for the suite's world (recall_curriculum.load_sets reads it)
    return args


def parse_demo_stages(stages: list[str], batch_size: int) -> list[tuple[str, int, int]]:
    """["pink:700", "pink-hour:100:2"] -> [("pink", 700, batch_size), ("pink-hour", 100, 2)]: NAME:STEPS of
    recall_curriculum.py, with an optional batch size of that stage (hour-long videos cost 20 times a 3-minute one)."""
    from research.recall.recall_curriculum import parse_stages

    parsed = []
    for stage in stages:
        name_steps, batch = stage, ""
        if stage.count(":") == 2:
            name_steps, _, batch = stage.rpartition(":")
            if not batch.isdigit():
                raise SystemExit(f"--stages {stage!r}: write NAME:STEPS or NAME:STEPS:BATCH")
        ((name, steps),) = parse_stages([name_steps])
        parsed.append((name, steps, int(batch) if batch else batch_size))
    return parsed


def stage_folders(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    """(set, steps, batch size, output folder) of every stage, in order."""
    runs = f"{args.workdir}/runs/seed{args.seed}"
    folders = []
    for k, (name, steps, batch) in enumerate(parse_demo_stages(args.stages, args.batch_size)):
        suffix = "" if batch == args.batch_size else f"-b{batch}"
        folders.append((name, steps, batch, f"{runs}/{k:02d}-{name}-{steps}{suffix}"))
    return folders


def train(args: argparse.Namespace, tower: str, features: str) -> str:
    """Every stage with `train.py`, each from the previous one's model; returns the last model's folder."""
    from research.recall.recall_ablation import run, train_command
    from research.recall.recall_model import kept_frames_budget, write_recall_init

    start = f"{args.workdir}/runs/seed{args.seed}/init"
    if not os.path.exists(os.path.join(start, "model.safetensors")):
        write_recall_init(
            start, "memaug", seed=args.seed, tower_from=tower, overrides=kept_frames_budget(args.kept_frames)
        )
    for name, steps, batch, out in stage_folders(args):
        if not os.path.exists(os.path.join(out, "training_summary.json")):
            print(f"stage {os.path.basename(out)}: train.py from {os.path.basename(start)}", flush=True)
            data = f"{args.workdir}/{name}"
            command = train_command(args, start, f"{data}/chat", f"{data}/videos", features, out, args.seed, steps,
                                    batch, save_steps=args.save_steps, keep_checkpoints=None)  # fmt: skip
            run(command, f"{out}.log")
        start = out
    return start


def checkpoints_of(folder: str) -> list[tuple[int, str]]:
    """(step within the stage, folder) of every checkpoint a stage kept, and its final model, in order."""
    found = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith("checkpoint-") and name.split("-")[1].isdigit():
                found.append((int(name.split("-")[1]), f"{folder}/{name}"))
    return sorted(found)


def learning_curve(args: argparse.Namespace) -> list[dict]:
    """Every kept checkpoint of every finished stage scored on the held-out sets (exact answers, teacher-forced;
    at most --curve-videos conversations per set), each point cached next to its checkpoint."""
    import torch

    from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor
    from research.recall.recall_curriculum import held_out, load_sets

    torch.set_num_threads(1)
    curve, offset, loaded = [], 0, None
    for name, steps, _, out in stage_folders(args):
        if not os.path.exists(os.path.join(out, "training_summary.json")):
            break
        for step, checkpoint in checkpoints_of(out):
            path = f"{checkpoint}/held_out.json"
            if not os.path.exists(path):
                if loaded is None:
                    loaded = load_sets(args, HourLlavaProcessor.from_pretrained(out), args.tests)
                rows, collate = loaded
                model = HourLlavaForConditionalGeneration.from_pretrained(checkpoint)
                limit = args.curve_videos or None
                accuracy = {test: held_out(model, rows[test][:limit], collate[test], whole=True) for test in args.tests}
                write_json_atomically(path, accuracy)
            with open(path) as handle:
                point = {"step": offset + step, "stage": name, "accuracy": json.load(handle)}
            curve.append(point)
            print("curve", point, flush=True)
        with open(os.path.join(out, "training_summary.json")) as handle:
            losses = json.load(handle).get("losses", [])
        curve[-1]["losses_of_stage"] = losses
        offset += steps
    return curve


def demo_curve(args: argparse.Namespace) -> list[dict]:
    """The demo's own question (`demo_accuracy`, generation) at the end of every finished stage, on
    --curve-demo-videos fresh 30-60 minute demo videos (seeds from 6000, apart from the final score's), cached."""
    points, offset = [], 0
    for name, steps, _, out in stage_folders(args):
        if not os.path.exists(os.path.join(out, "training_summary.json")):
            break
        offset += steps
        path = f"{out}/demo_curve-{args.curve_demo_videos}.json"
        if not os.path.exists(path):
            result = demo_accuracy(out, args.curve_demo_videos, 6000, f"{args.workdir}/demo")
            write_json_atomically(path, {k: v for k, v in result.items() if k != "answers"})
        with open(path) as handle:
            points.append({"step": offset, "stage": name, **json.load(handle)})
        print("demo curve", points[-1], flush=True)
    return points


def demo_accuracy(model: str, videos: int, first_seed: int, workdir: str) -> dict:
    """The model answering the needle questions exactly as `hour-llava-demo` asks them (generation, 30-60 minute
    videos of the demo's own seeds `first_seed`..): right per task, and over the demo's own questions (`DEMO_TASKS`)
    right, how often the needle was among the frames the decoder saw and how often MemAug's attention peaked at the
    needle (`hour_llava_demo.cli.within`)."""
    import torch

    from hour_llava_demo.cli import answer_video, load_model, within
    from hour_llava_demo.world import DEMO_TASKS, NEEDLE_TASKS, NeedleWorld, demo_timeline, write_timeline_video

    torch.set_num_threads(1)
    processor, loaded, _ = load_model(model, Path(workdir))
    world, answers = NeedleWorld(), []
    for k in range(videos):
        minutes = 30 + 30 * k / max(1, videos)  # spread over 30-60 minutes
        timeline = demo_timeline(minutes, first_seed + k, world)
        video = write_timeline_video(f"{workdir}/videos/{timeline.video}", timeline, world.size)
        for answer in answer_video(processor, loaded, timeline, video, tasks=tuple(NEEDLE_TASKS)).answers:
            answers.append({"task": answer.question.task, "seed": first_seed + k, "duration": timeline.duration,
                            "right": answer.right, "kept": answer.moment_kept,
                            "peak_at_moment": within(answer.peak_second, answer.question.moment)})  # fmt: skip
    tasks = sorted({a["task"] for a in answers})
    asked = [a for a in answers if a["task"] in DEMO_TASKS]  # what the demo asks

    def percent(rows: list[dict], key: str) -> float:
        return 100.0 * sum(bool(r[key]) for r in rows) / max(1, len(rows))

    summary = {"videos": videos, "demo_tasks": list(DEMO_TASKS), "questions": len(asked),
               "right": percent(asked, "right"), "needle_kept": percent(asked, "kept"),
               "peak_at_moment": percent(asked, "peak_at_moment"),
               "peak_at_moment_when_right": percent([a for a in asked if a["right"]], "peak_at_moment")}  # fmt: skip
    summary["per_task"] = {task: percent([a for a in answers if a["task"] == task], "right") for task in tasks}
    return {**summary, "answers": answers}


def markdown(curve: list[dict], demo: dict, tests: list[str], stages_demo: list[dict]) -> str:
    """The learning curve (exact answers, teacher-forced, per held-out set; the demo's question at the end of each
    stage) and the held-out demo result as markdown tables."""
    from research.recall.recall_curriculum import SETS

    lengths = " | ".join(f"{t} ({SETS[t].minutes[0]:g}-{SETS[t].minutes[1]:g} min)" for t in tests)
    lines = [f"| step | stage | {lengths} |", "|---|---|" + "---|" * len(tests)]
    for point in curve:
        cells = " | ".join(f"{point['accuracy'][t]:.1f}" for t in tests)
        lines.append(f"| {point['step']} | {point['stage']} | {cells} |")
    lines += ["", "| after stage (step) | demo videos | needle's shape right | attention peak at the needle (right "
              "answers) | background right |", "|---|---|---|---|---|"]  # fmt: skip
    for point in stages_demo:
        lines.append(f"| {point['stage']} ({point['step']}) | {point['videos']} | "
                     f"{point['per_task'].get('needle_shape', 0.0):.1f} | {point['peak_at_moment_when_right']:.1f} | "
                     f"{point['per_task'].get('needle_scene', 0.0):.1f} |")  # fmt: skip
    shape, scene = demo["per_task"].get("needle_shape", 0.0), demo["per_task"].get("needle_scene", 0.0)
    lines += ["", "| demo videos (30-60 min) | needle's shape right | needle among the decoder's frames | "
              "attention peak at the needle (right answers) | background right (not asked) |", "|---|---|---|---|---|",
              f"| {demo['videos']} | {shape:.1f} | {demo['needle_kept']:.1f} | "
              f"{demo['peak_at_moment_when_right']:.1f} | {scene:.1f} |"]  # fmt: skip
    return "\n".join(lines) + "\n"


MODEL_CARD = """---
library_name: transformers
pipeline_tag: video-text-to-text
tags: [hour-llava, long-video, memaug, tiny]
---
# hour-llava-recall-tiny

The embedded default model of the package (`make demo`): Hour-LLaVA with MemAug at toy scale, trained from scratch
by `research/recall/recall_demo_model.py` with the package's `train.py` on the demo's world
(`hour_llava_demo.world`: scenes of 5 to 15 s at 1 fps, a coloured shape flashed every 5 to 12 s, one of them, the
needle, the only pink one), through a length curriculum ({stages}; batches of {batch} unless a stage names
its own; seed {seed}), on two questions about the pink flash: its shape and the background it flashed on. It knows
nothing else.

Held-out, as the demo asks ({videos} fresh videos of 30 to 60 minutes whose needle is a circle or a square): it names
the pink shape in {shape:.1f} % of them (guessing: 1 in 2), while the needle was among the 16 frames the decoder
sees in {kept:.1f} %; MemAug's attention peaked within 3 s of the needle for {peak:.1f} % of the right answers. The
background it flashed on, which the demo does not ask: {scene:.1f} % (guessing: 1 in 8).

Architecture: a 2-layer SigLIP tower (32 px frames, 8 px patches) pretrained to tell backgrounds, colours and
shapes apart, then frozen; 2 x 2 memory grid; forgetting to 16 frames x 1 token (32 decoder tokens whatever the
length); 2 MemAug blocks; a 2-layer Qwen2 decoder (width 128) with a 600-token BPE vocabulary. This folder holds no
code: `hour_llava_demo.checkpoint.materialise_checkpoint` writes the package's remote code next to it, then
`AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)` loads it.
"""


def main(argv: list[str] | None = None) -> int:
    from research.recall.recall_curriculum import prepare
    from research.recall.recall_model import export_recall_model, recall_tower, shared_tower_paths

    args = parse_args(argv)
    started = time.time()
    tower, features = shared_tower_paths(args.workdir)
    recall_tower(tower)
    stages = [name for name, *_ in parse_demo_stages(args.stages, args.batch_size)]
    names = tuple(dict.fromkeys(stages + args.tests))
    prepare(args.workdir, tower, features, names=names, max_videos=args.max_videos)
    print(f"sets ready: {', '.join(names)}   {time.time() - started:.0f} s", flush=True)
    model = train(args, tower, features)
    print(f"trained: {model}   {time.time() - started:.0f} s", flush=True)
    curve = learning_curve(args)
    stages_demo = demo_curve(args) if args.curve_demo_videos else []
    held_out_demo = f"{model}/demo_accuracy-{args.demo_videos}-{args.demo_seed}.json"
    if not os.path.exists(held_out_demo):
        write_json_atomically(held_out_demo, demo_accuracy(model, args.demo_videos, args.demo_seed,
                                                           f"{args.workdir}/demo"))  # fmt: skip
    with open(held_out_demo) as handle:
        demo = json.load(handle)
    print(
        f"held-out demo questions: {demo['right']:.1f} % right {demo['per_task']}, needle kept "
        f"{demo['needle_kept']:.1f} %, attention peak at the needle for "
        f"{demo['peak_at_moment_when_right']:.1f} % of the right answers",
        flush=True,
    )
    summaries = {}
    for *_, out in stage_folders(args):
        with open(os.path.join(out, "training_summary.json")) as handle:
            summary = json.load(handle)
        summaries[os.path.basename(out)] = {
            "train_seconds": summary.get("train_seconds"),
            "losses": summary.get("losses"),
        }
    arguments = {k: v for k, v in vars(args).items() if k not in ("workdir",)}
    write_atomically(args.markdown, markdown(curve, demo, args.tests, stages_demo))
    write_json_atomically(args.json, {"benchmark": "recall_demo_model", "args": arguments, "curve": curve,
                                      "demo_curve": stages_demo, "stages": summaries, "demo": demo,
                                      "seconds": round(time.time() - started, 1)})  # fmt: skip
    if args.export_to:
        card = MODEL_CARD.format(stages=" then ".join(args.stages), batch=args.batch_size, seed=args.seed,
                                 videos=demo["videos"], shape=demo["per_task"].get("needle_shape", 0.0),
                                 scene=demo["per_task"].get("needle_scene", 0.0), kept=demo["needle_kept"],
                                 peak=demo["peak_at_moment_when_right"])  # fmt: skip
        export_recall_model(model, args.export_to, card, remote_code=False)
        print(f"exported {model} to {args.export_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

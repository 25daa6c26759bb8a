"""Does a curriculum make the recall suite learnable at CPU scale? A probe behind the recall ablation's negative result.

    .venv/bin/python benchmarks/recall_curriculum.py                 # memaug and uniform, seed 0 (about 15 min)

The recall ablation (benchmarks/recall_ablation.py) leaves every variant at chance: the models never learn to find
a flash among the video tokens. This script tests the suite's model on the easiest version of the task and with a
curriculum: short one-flash videos (1.5 to 3 minutes, scenes of 5 to 15 s), open-ended colour, shape and scene
questions only, and two stages:

- stage A (`fixed`): the flash starts at second 0, a frame that uniform forgetting always keeps, so the decoder can
  learn to read a flash before it must find one;
- stage B (`moving`): the flash at a random second, as in the suite.

Each variant starts from a fresh init (the shared tower) and is trained in process (AdamW, constant rate, the
package's collator on cached features); every `--eval-every` steps the held-out accuracy of the first answer token
(teacher-forced, exact for these one-token answers) on `moving` test videos is recorded. Chance is about 24 %
(four colours, three shapes, eight backgrounds). Results go to --json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from dataset_builder.media import write_json_atomically  # noqa: E402

SHORT = {"min_minutes": 1.5, "max_minutes": 3.0, "min_scene_seconds": 5, "max_scene_seconds": 15, "max_flashes": 1,
         "question_types": ("open-ended",), "tasks": ("colour", "shape", "scene")}  # fmt: skip
SETS = {"fixed": (600, 8, 0), "moving": (600, 9, None), "test": (60, 10, None)}  # name: (videos, seed, flash_start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".cache", "recall_curriculum"))
    parser.add_argument("--variants", nargs="+", default=["memaug", "uniform"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--stage-a-steps", type=int, default=300)
    parser.add_argument("--stage-b-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", default=os.path.join(HERE, "results", "recall_curriculum.json"))
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "SEED", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def prepare(work: str, tower: str | None = None) -> None:
    """The three suites as grouped chat rows (3 questions per sample) and their features, by `tower` (a checkpoint
    folder; default: a seed-0 recall model written to `<work>/tower`)."""
    from dataset_builder import extract_features
    from dataset_builder.recall_suite import RecallSpec, write_recall_suite
    from dataset_builder.videomarathon import VideoMarathon
    from hour_llava_training.recall import write_recall_init

    tower = tower or f"{work}/tower"
    if not os.path.exists(f"{tower}/model.safetensors"):
        write_recall_init(tower, "memaug", seed=0)
    for name, (videos, seed, start) in SETS.items():
        spec = RecallSpec(num_videos=videos, split=name, seed=seed, flash_start=start, **SHORT)
        suite = write_recall_suite(f"{work}/{name}", spec)
        chat = f"{work}/{name}/chat/train.parquet"
        if suite.replaced or not os.path.exists(chat):
            builder = VideoMarathon(config_name="grouped", cache_dir=f"{work}/{name}/builder", group_size=3,
                                    annotations=suite.hub_rows, video_root=suite.video_root,
                                    validation_fraction=0.0)  # fmt: skip
            builder.download_and_prepare()
            builder.as_dataset(split="train").to_parquet(chat)
        extract_features.main(["--model", tower, "--video-root", suite.video_root,
                               "--output-dir", f"{work}/features", "--threads", "1"])  # fmt: skip


def first_answer_accuracy(labels, logits) -> tuple[int, int]:
    """(right, total) over the first labelled token of every assistant turn, teacher-forced."""
    right = total = 0
    for row in range(labels.shape[0]):
        starts = [t for t in range(1, labels.shape[1]) if labels[row, t] != -100 and labels[row, t - 1] == -100]
        right += sum(int(logits[row, t - 1].argmax() == labels[row, t]) for t in starts)
        total += len(starts)
    return right, total


def worker(args: argparse.Namespace, variant: str, seed: int, out: str) -> None:
    """Train one variant through both stages in this process and write its accuracy curve to `out`."""
    import datasets
    import torch

    from hour_llava_training.collator import HourLlavaCollator
    from hour_llava_training.recall import write_recall_init
    from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor

    torch.set_num_threads(1)
    work = args.workdir
    init = write_recall_init(f"{work}/init-{variant}-{seed}", variant, seed=seed, tower_from=f"{work}/tower")
    model = HourLlavaForConditionalGeneration.from_pretrained(init)
    processor = HourLlavaProcessor.from_pretrained(init)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith("model.vision_tower")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    rows = {name: list(datasets.load_dataset("parquet", data_files=f"{work}/{name}/chat/train.parquet")["train"])
            for name in SETS}  # fmt: skip
    collate = {name: HourLlavaCollator(processor, media_root=f"{work}/{name}/videos", feature_dir=f"{work}/features")
               for name in SETS}  # fmt: skip

    def held_out() -> float:
        model.eval()
        right = total = 0
        with torch.no_grad():
            for start in range(0, len(rows["test"]), 8):
                batch = collate["test"](rows["test"][start : start + 8])
                r, t = first_answer_accuracy(batch["labels"], model(**batch).logits)
                right, total = right + r, total + t
        model.train()
        return 100.0 * right / total

    torch.manual_seed(seed)
    sampler = random.Random(seed)
    curve, step, started = [], 0, time.time()
    for stage, steps in (("fixed", args.stage_a_steps), ("moving", args.stage_b_steps)):
        for _ in range(steps):
            step += 1
            batch = collate[stage](sampler.sample(rows[stage], args.batch_size))
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if step % args.eval_every == 0:
                curve.append({"step": step, "stage": stage, "loss": round(loss.item(), 4), "accuracy": held_out()})
                print(variant, seed, curve[-1], flush=True)
    write_json_atomically(out, {"variant": variant, "seed": seed, "curve": curve,
                                "seconds": round(time.time() - started, 1)})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        variant, seed, out = args.worker
        worker(args, variant, int(seed), out)
        return 0
    started, load_before = time.time(), os.getloadavg()
    prepare(args.workdir)

    def run(job: tuple[str, int]) -> dict:
        variant, seed = job
        out = f"{args.workdir}/result-{variant}-{seed}.json"
        if not os.path.exists(out):
            command = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:]), "--worker", variant,
                       str(seed), out]  # fmt: skip
            env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
            subprocess.run(command, check=True, env=env, cwd=ROOT)
        with open(out) as handle:
            return json.load(handle)

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, [(v, s) for s in args.seeds for v in args.variants]))
    print("| variant | seed | " + " | ".join(f"step {p['step']} ({p['stage']})" for p in results[0]["curve"]) + " |")
    for result in results:
        cells = " | ".join(f"{p['accuracy']:.1f}" for p in result["curve"])
        print(f"| {result['variant']} | {result['seed']} | {cells} |")
    report = {"benchmark": "recall_curriculum", "args": {k: v for k, v in vars(args).items() if k != "worker"},
              "chance_percent": 100 * (1 / 4 + 1 / 3 + 1 / 8) / 3, "results": results,
              "seconds": round(time.time() - started, 1), "load_average_before": load_before,
              "load_average_after": os.getloadavg()}  # fmt: skip
    write_json_atomically(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MemAug against hand-made compression on the recall suite's one-flash and needle forms, trained in stages.

    .venv/bin/python research/recall/recall_curriculum.py --stages fixed:300 moving:400 --tests test test-medium \
        test-long --eval-every 700 --variants memaug uniform random keyframe question --seeds 0 1 \
        --export memaug:0                                                   # the one-flash table (README)
    .venv/bin/python research/recall/recall_curriculum.py --stages pink-slow:300 pink:700 --kept-frames 16 \
        --tests test-pink-slow test-pink test-pink-long --eval-every 100 \
        --variants memaug uniform random keyframe-vision keyframe question --seeds 0 1 \
        --json research/recall/results/recall_needle.json \
        --markdown research/recall/results/recall_needle.md   # the needle table

The one-flash form (`research.recall.recall_suite.ONE_FLASH`: one coloured shape flashed for 2 or 3 s, scenes of 5
to 15 s, open-ended colour, shape and scene questions; chance 23.6 %):

- `fixed`: 1.5-3 min videos with the flash at second 0, a frame uniform forgetting always keeps, so the decoder
  learns to read a flash before it must find one;
- `moving`: 1.5-3 min videos, the flash anywhere;
- `medium`: 5-15 min videos; `long`: 15-60 min videos (held out: `test`, `test-medium`, and `test-long`, 30-60 min).

The needle form (`NEEDLE`: a flash every 5 to 12 s, one of them, the needle, the only one of its colour; "Which
shape flashed on screen in pink?", "What was the background colour when the pink shape flashed?"; chance 22.9 %),
at a budget of 16 kept frames (`--kept-frames 16`), so that 3-6 minute videos keep one frame in 11 to 22 seconds:

- `needle-slow` / `pink-slow`: 2-2.5 min videos whose flashes last 10-12 s, so the 16 uniformly kept frames show
  every flash and the decoder learns to read the needle among its distractors;
- `needle-quick`: 2-3 min videos with 2-3 s flashes; `needle` / `pink`: 3-6 min videos (held out: `test-needle*`,
  `test-pink*`, 20-40 min for `*-long`). In the `pink*` sets every needle is pink (one search target to learn).

Every variant has the same decoder budget and shares one frozen tower, pretrained for the suite's world
(`research.recall.recall_model.recall_tower`; `--random-tower` for a random one, with which no variant leaves
chance). Each variant and seed starts from a fresh init and is trained in a child process (AdamW, constant rate,
the package's collator on cached features, one thread); every `--eval-every` steps the held-out accuracy of the
first answer token (teacher-forced; cheap, and kind where answers share a first token) on every `--tests` set is
recorded, and at the end the exact-answer accuracy (every answer token and the end of turn are the greedy choice,
i.e. generation writes exactly the answer), which the table reports, and how often the asked-about flash is among
the frames forgetting keeps (`asked_flash_kept`, in brackets). A finished run is reused under the same settings.
Results: --json and --markdown (atomically), the trained models under `<workdir>/runs/<settings>/`;
`--export VARIANT:SEED` makes one the embedded default.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from dataset_builder.media import write_json_atomically  # noqa: E402
from hour_llava_lmms.evaluation import write_atomically  # noqa: E402

SHORT, MEDIUM, LONG, HOUR = (1.5, 3.0), (5.0, 15.0), (15.0, 60.0), (30.0, 60.0)  # video lengths, minutes
NEEDLE_SHORT, NEEDLE_LONG = (3.0, 6.0), (20.0, 40.0)
# Chance of an exact answer (%) per form: one-flash 1/4 colour, 1/3 shape, 1/8 scene; needle 1/3 shape, 1/8 scene.
CHANCE = {"one-flash": 100 * (1 / 4 + 1 / 3 + 1 / 8) / 3, "needle": 100 * (1 / 3 + 1 / 8) / 2}


SLOW_NEEDLES = {"flash_seconds": (10, 12), "flash_gap_seconds": (1, 4), "min_scene_seconds": 13,
                "max_scene_seconds": 18}  # fmt: skip


class RecallSet(NamedTuple):
    """A set of the suite: how many videos, its seed, their lengths (minutes), its form (`one-flash`: ONE_FLASH,
    `needle`: NEEDLE) and RecallSpec fields on top of the form's."""

    videos: int
    seed: int
    minutes: tuple[float, float]
    form: str
    spec: dict = {}


# Sets named "test*" are held out, the others are training stages.
SETS = {
    "fixed": RecallSet(600, 8, SHORT, "one-flash", {"flash_start": 0}),
    "moving": RecallSet(600, 9, SHORT, "one-flash"),
    "test": RecallSet(60, 10, SHORT, "one-flash"),
    "medium": RecallSet(400, 11, MEDIUM, "one-flash"),
    "long": RecallSet(300, 12, LONG, "one-flash"),
    "test-medium": RecallSet(40, 13, MEDIUM, "one-flash"),
    "test-long": RecallSet(40, 14, HOUR, "one-flash"),
    # The needle form: first flashes of 10-12 s in 2-2.5 min videos, which 16 uniformly kept frames (one every 10 s
    # or less) always catch, so the decoder learns to read the needle among its distractors; then 2-3 s flashes.
    "needle-slow": RecallSet(600, 24, (2.0, 2.5), "needle", SLOW_NEEDLES),
    "test-needle-slow": RecallSet(60, 26, (2.0, 2.5), "needle", SLOW_NEEDLES),
    "needle-quick": RecallSet(600, 25, (2.0, 3.0), "needle"),
    # The same with every needle pink (the question never changes: the search has one target to learn).
    "pink-slow": RecallSet(600, 27, (2.0, 2.5), "needle", {**SLOW_NEEDLES, "needle_colour": "pink"}),
    "pink": RecallSet(800, 28, NEEDLE_SHORT, "needle", {"needle_colour": "pink"}),
    "test-pink-slow": RecallSet(60, 29, (2.0, 2.5), "needle", {**SLOW_NEEDLES, "needle_colour": "pink"}),
    "test-pink": RecallSet(60, 30, NEEDLE_SHORT, "needle", {"needle_colour": "pink"}),
    "test-pink-long": RecallSet(40, 31, NEEDLE_LONG, "needle", {"needle_colour": "pink"}),
    # The demo's world (hour_llava_demo): pink needles, a length curriculum up to the hour (recall_demo_model.py).
    "pink-medium": RecallSet(300, 32, (8.0, 20.0), "needle", {"needle_colour": "pink"}),
    "pink-hour": RecallSet(240, 33, HOUR, "needle", {"needle_colour": "pink"}),
    "test-pink-hour": RecallSet(40, 34, HOUR, "needle", {"needle_colour": "pink"}),
    "needle": RecallSet(800, 21, NEEDLE_SHORT, "needle"),
    "test-needle": RecallSet(60, 22, NEEDLE_SHORT, "needle"),
    "test-needle-long": RecallSet(40, 23, NEEDLE_LONG, "needle"),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".cache", "recall_curriculum"))
    parser.add_argument("--variants", nargs="+", default=["memaug", "uniform"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--stages", nargs="+", default=["fixed:300", "moving:400"],
                        help="training stages in order, NAME:STEPS (names: " + ", ".join(
                            n for n in SETS if not n.startswith("test")) + ")")  # fmt: skip
    parser.add_argument("--tests", nargs="+", default=["test"], choices=[n for n in SETS if n.startswith("test")],
                        help="held-out sets scored at every evaluation")  # fmt: skip
    parser.add_argument("--kept-frames", type=int, default=None,
                        help="frames temporal forgetting keeps of every video, for every variant but `full` "
                        "(default: the recall model's 1/4 of the frames, 32 to 64)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--random-tower", action="store_true",
                        help="a random frozen tower instead of one pretrained for the suite's world")  # fmt: skip
    parser.add_argument("--max-videos", type=int, default=0, help="cap every set at this many videos (smoke runs)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", default=os.path.join(HERE, "results", "recall_curriculum.json"))
    parser.add_argument("--export", metavar="VARIANT:SEED", help="export this trained model to --export-to")
    parser.add_argument("--export-to", default=os.path.join(ROOT, "checkpoints", "hour-llava-recall-tiny"))
    parser.add_argument("--markdown", default=os.path.join(HERE, "results", "recall_curriculum.md"))
    parser.add_argument("--rescore", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "SEED", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_spec(name: str, max_videos: int = 0):
    """The RecallSpec of the set `name` of SETS (at most `max_videos` videos, if set); its split is its name."""
    from research.recall.recall_suite import NEEDLE, ONE_FLASH, RecallSpec

    chosen, forms = SETS[name], {"one-flash": ONE_FLASH, "needle": NEEDLE}
    return RecallSpec(num_videos=min(chosen.videos, max_videos or chosen.videos), split=name, seed=chosen.seed,
                      min_minutes=chosen.minutes[0], max_minutes=chosen.minutes[1],
                      **{**forms[chosen.form], **chosen.spec})  # fmt: skip


def prepare(
    work: str, tower: str, features: str, names: tuple[str, ...] = ("fixed", "moving", "test"), max_videos: int = 0
) -> None:
    """The sets `names` of SETS (at most `max_videos` videos each, if set) as grouped chat rows (3 questions per
    sample) and their features in `features`, by `tower` (a checkpoint folder, `recall_tower`)."""
    from dataset_builder import extract_features
    from research.recall.recall_suite import grouped_chat, write_recall_suite

    for name in names:
        spec = set_spec(name, max_videos)
        suite = write_recall_suite(f"{work}/{name}", spec)
        extract_features.drop_features(features, suite.replaced)  # videos rewritten for a changed spec
        grouped_chat(suite, f"{work}/{name}/chat/train.parquet", group_size=3)
        extract_features.main(["--model", tower, "--video-root", suite.video_root,
                               "--output-dir", features, "--threads", "1"])  # fmt: skip


def parse_stages(stages: list[str]) -> list[tuple[str, int]]:
    """["fixed:300", "moving:400"] -> [("fixed", 300), ("moving", 400)], every name a training set of SETS."""
    parsed = []
    for stage in stages:
        name, _, steps = stage.partition(":")
        if name not in SETS or name.startswith("test") or not steps.isdigit():
            training = [n for n in SETS if not n.startswith("test")]
            raise SystemExit(f"--stages {stage!r}: write NAME:STEPS with NAME one of {training}")
        parsed.append((name, int(steps)))
    return parsed


def answer_accuracy(labels, logits, whole: bool = True) -> tuple[int, int]:
    """(right, total) over the assistant turns, teacher-forced. `whole`: a turn is right when every labelled token
    (the answer's tokens and the end of turn) is the argmax, i.e. greedy decoding would write exactly the answer;
    otherwise only its first token counts (cheaper to learn, and kinder: answers that share a first token, such as
    "black" and "blue" with this 600-token vocabulary, are not told apart)."""
    right = total = 0
    for row in range(labels.shape[0]):
        labelled = (labels[row] != -100).tolist()
        turns, start = [], None
        for t, inside in enumerate(labelled + [False]):
            if inside and start is None:
                start = t
            elif not inside and start is not None:
                turns.append((start, t if whole else start + 1))
                start = None
        for begin, end in turns:
            predicted = logits[row, begin - 1 : end - 1].argmax(-1)
            right += int(bool((predicted == labels[row, begin:end]).all()))
        total += len(turns)
    return right, total


def load_sets(args: argparse.Namespace, processor, names) -> tuple[dict, dict]:
    """Chat rows and a collator (on the cached features) for each set of `names`."""
    import datasets

    from hour_llava_training.collator import HourLlavaCollator

    _, features = tower_and_features(args)
    chats = {name: f"{args.workdir}/{name}/chat/train.parquet" for name in names}
    rows = {name: list(datasets.load_dataset("parquet", data_files=chats[name])["train"]) for name in names}
    collate = {name: HourLlavaCollator(processor, media_root=f"{args.workdir}/{name}/videos", feature_dir=features)
               for name in names}  # fmt: skip
    return rows, collate


def held_out(model, rows: list[dict], collate, whole: bool) -> float:
    """Accuracy (%) of `model` on held-out conversations, 8 at a time (`answer_accuracy`)."""
    import torch

    training = model.training
    model.eval()
    right = total = 0
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = collate(rows[start : start + 8])
            r, t = answer_accuracy(batch["labels"], model(**batch).logits, whole)
            right, total = right + r, total + t
    model.train(training)
    return 100.0 * right / total


@contextlib.contextmanager
def recorded_frame_selection():
    """Record the frames temporal forgetting keeps (one list per call) while the model runs: the model's own
    selection, with its own inputs, generator and features, not a re-computation of it."""
    from modeling_hour_llava import memory_hour_llava

    original, kept = memory_hour_llava.temporal_forgetting, []

    def recording(*args, **kwargs):
        frames = original(*args, **kwargs)
        kept.append(frames.tolist())
        return frames

    memory_hour_llava.temporal_forgetting = recording
    try:
        yield kept
    finally:
        memory_hour_llava.temporal_forgetting = original


def asked_flash_kept(model, rows: list[dict], collate, timelines: str) -> float:
    """How often (%) the flash the questions ask about (the needle; the one flash of the one-flash form) is among
    the frames that temporal forgetting keeps for the decoder, over held-out conversations (one forward each): the
    ceiling of a hand-made selection."""
    import torch

    from research.recall.recall_suite import Flash, RecallTimeline, needle_of

    with open(timelines) as handle:
        stored = json.load(handle)["timelines"]
    asked = {}
    for item in stored:
        timeline = RecallTimeline(item["video"], item["duration"], item["scenes"],
                                  [Flash(**flash) for flash in item["flashes"]])  # fmt: skip
        flash = timeline.flashes[-1] if len(timeline.flashes) == 1 else needle_of(timeline)
        asked[timeline.video] = (timeline.duration, flash)
    kept_count, training = 0, model.training
    model.eval()  # inference draws its random choices from the input, not from torch's global generator
    with torch.no_grad(), recorded_frame_selection() as selections:
        for row in rows:
            batch = collate([row])
            model(**batch)
            memory_frames = max(int(batch["video_num_frames"][0]), model.config.memory_min_frames)
            duration, flash = asked[os.path.basename(row["messages"][0]["content"][0]["path"])]
            seconds = {int(k * duration / memory_frames) for k in selections[-1]}
            kept_count += bool(seconds & set(range(flash.start, flash.end)))
    model.train(training)
    return 100.0 * kept_count / len(rows)


def kept_of(args: argparse.Namespace, variant: str, model, rows: dict, collate: dict) -> dict[str, float]:
    """`asked_flash_kept` on every held-out set (none for `full`, which keeps every frame)."""
    if variant == "full":
        return {}
    timelines = {name: f"{args.workdir}/{name}/annotations/timelines.json" for name in args.tests}
    return {name: asked_flash_kept(model, rows[name], collate[name], timelines[name]) for name in args.tests}


def worker(args: argparse.Namespace, variant: str, seed: int, out: str) -> None:
    """Train one variant through every stage in this process and write its accuracy curve (first answer token) and
    final exact-answer accuracy to `out`; with --rescore, only score the model an earlier run saved."""
    import torch

    from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor
    from research.recall.recall_model import kept_frames_budget, write_recall_init

    torch.set_num_threads(1)
    stages = parse_stages(args.stages)
    trained = f"{os.path.dirname(out)}/model-{variant}-{seed}"
    init = f"{os.path.dirname(out)}/init-{variant}-{seed}"
    if args.rescore:  # what an earlier run's result lacks, from its saved init and trained models
        with open(out) as handle:
            result = json.load(handle)
        rows, collate = load_sets(args, HourLlavaProcessor.from_pretrained(trained), args.tests)
        model = HourLlavaForConditionalGeneration.from_pretrained(trained)
        if "final" not in result:
            result["final"] = {name: held_out(model, rows[name], collate[name], whole=True) for name in args.tests}
        if "kept" not in result:
            result["kept"] = kept_of(args, variant, model, rows, collate)
        if "kept_at_init" not in result:
            untrained = HourLlavaForConditionalGeneration.from_pretrained(init)
            result["kept_at_init"] = kept_of(args, variant, untrained, rows, collate)
        write_json_atomically(out, result)
        return
    tower, _ = tower_and_features(args)
    budget = kept_frames_budget(args.kept_frames) if args.kept_frames and variant != "full" else None
    write_recall_init(init, variant, seed=seed, tower_from=tower, overrides=budget)
    model = HourLlavaForConditionalGeneration.from_pretrained(init)
    processor = HourLlavaProcessor.from_pretrained(init)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith("model.vision_tower")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    rows, collate = load_sets(args, processor, sorted({name for name, _ in stages} | set(args.tests)))
    kept_at_init = kept_of(args, variant, model, rows, collate)  # what the selection keeps before any training

    torch.manual_seed(seed)
    sampler = random.Random(seed)
    curve, step, started = [], 0, time.time()
    for stage, steps in stages:
        for _ in range(steps):
            step += 1
            batch = collate[stage](sampler.sample(rows[stage], args.batch_size))
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if step % args.eval_every == 0:
                accuracy = {name: held_out(model, rows[name], collate[name], whole=False) for name in args.tests}
                curve.append({"step": step, "stage": stage, "loss": round(loss.item(), 4), "accuracy": accuracy,
                              "seconds": round(time.time() - started, 1)})  # fmt: skip
                print(variant, seed, curve[-1], flush=True)
    final = {name: held_out(model, rows[name], collate[name], whole=True) for name in args.tests}
    kept = kept_of(args, variant, model, rows, collate)
    # The trained model, loadable like any checkpoint (the embedded default is exported from here).
    model.save_pretrained(trained)
    processor.save_pretrained(trained)
    write_json_atomically(out, {"variant": variant, "seed": seed, "curve": curve, "final": final, "kept": kept,
                                "kept_at_init": kept_at_init, "seconds": round(time.time() - started, 1)})  # fmt: skip


def tower_and_features(args: argparse.Namespace) -> tuple[str, str]:
    """The shared tower (pretrained for the suite's world unless --random-tower) and its feature folder."""
    from research.recall.recall_model import shared_tower_paths

    return shared_tower_paths(args.workdir, args.random_tower)


def settings_key(args: argparse.Namespace) -> str:
    """A short hash of everything that changes a worker's result except its variant and seed."""
    keys = ("stages", "tests", "batch_size", "learning_rate", "eval_every", "max_videos", "random_tower")
    if args.kept_frames:  # only when set, so runs made before the option existed keep their keys
        keys += ("kept_frames",)
    settings = {k: getattr(args, k) for k in keys}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        variant, seed, out = args.worker
        worker(args, variant, int(seed), out)
        return 0
    started, load_before = time.time(), os.getloadavg()
    stages = parse_stages(args.stages)
    names = tuple(dict.fromkeys([name for name, _ in stages] + args.tests))
    tower, features = tower_and_features(args)
    from research.recall.recall_model import recall_tower

    recall_tower(tower, pretrained=not args.random_tower)
    prepare(args.workdir, tower, features, names=names, max_videos=args.max_videos)

    run_dir = f"{args.workdir}/runs/{settings_key(args)}"  # a finished run is reused only under the same settings
    os.makedirs(run_dir, exist_ok=True)

    def run(job: tuple[str, int]) -> dict:
        variant, seed = job
        out = f"{run_dir}/result-{variant}-{seed}.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        if not os.path.exists(out):
            command = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:]), "--worker", variant,
                       str(seed), out]  # fmt: skip
            subprocess.run(command, check=True, env=env, cwd=ROOT)
        with open(out) as handle:
            result = json.load(handle)
        if not {"final", "kept", "kept_at_init"} <= result.keys():  # finished before that scoring existed
            command = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:]), "--rescore", "--worker",
                       variant, str(seed), out]  # fmt: skip
            subprocess.run(command, check=True, env=env, cwd=ROOT)
            with open(out) as handle:
                result = json.load(handle)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, [(v, s) for s in args.seeds for v in args.variants]))
    for test in args.tests:
        print(f"\nheld-out accuracy (%) on {test!r} ({SETS[test].minutes[0]:g} to {SETS[test].minutes[1]:g} min)")
        print(
            "| variant | seed | " + " | ".join(f"step {p['step']} ({p['stage']})" for p in results[0]["curve"]) + " |"
        )
        for result in results:
            cells = " | ".join(f"{p['accuracy'][test]:.1f}" for p in result["curve"])
            print(f"| {result['variant']} | {result['seed']} | {cells} |")
    table, markdown = final_table(results, args.tests)
    print("\n" + markdown)
    arguments = {k: v for k, v in vars(args).items() if k != "worker"}
    chance = {test: CHANCE[SETS[test].form] for test in args.tests}
    report = {"benchmark": "recall_curriculum", "run_dir": os.path.relpath(run_dir, ROOT), "args": arguments,
              "chance_percent": chance, "final": table, "results": results,
              "seconds": round(time.time() - started, 1), "load_average_before": load_before,
              "load_average_after": os.getloadavg()}  # fmt: skip
    write_json_atomically(args.json, report)
    write_atomically(args.markdown, markdown + "\n")
    if args.export:
        variant, _, seed = args.export.partition(":")
        export(
            args,
            run_dir,
            variant,
            int(seed),
            next(r for r in results if (r["variant"], r["seed"]) == (variant, int(seed))),
        )
    return 0


def final_table(results: list[dict], tests: list[str]) -> tuple[dict, str]:
    """Exact-answer accuracy of the trained models, mean and sample standard deviation over seeds (as
    recall_ablation.py reports it), per variant and held-out set, with the mean share of conversations whose
    asked-about flash survives forgetting (`asked_flash_kept`, in brackets), as a dict and a markdown table (with
    each set's video lengths)."""
    table: dict[str, dict[str, dict]] = {}
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        table[variant] = {}
        for test in tests:
            scores = [r["final"][test] for r in runs]
            kept = [r["kept"][test] for r in runs if test in r.get("kept", {})]
            table[variant][test] = {"mean": statistics.fmean(scores), "seeds": len(scores),
                                    "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                                    "kept": statistics.fmean(kept) if kept else None}  # fmt: skip
    header = " | ".join(f"{test} ({SETS[test].minutes[0]:g}-{SETS[test].minutes[1]:g} min)" for test in tests)
    lines = [f"| variant | seeds | {header} |", "|---|---|" + "---|" * len(tests)]
    for variant, cells in table.items():
        values = " | ".join(
            f"{cells[t]['mean']:.1f} ± {cells[t]['std']:.1f}" + (f" [{cells[t]['kept']:.0f}]" if cells[t]["kept"]
                                                                 is not None else "")
            for t in tests
        )  # fmt: skip
        lines.append(f"| {variant} | {cells[tests[0]]['seeds']} | {values} |")
    return table, "\n".join(lines)


MODEL_CARD = """---
library_name: transformers
pipeline_tag: video-text-to-text
tags: [hour-llava, long-video, memaug, tiny]
---
# hour-llava-recall-tiny

The embedded default model of the package: Hour-LLaVA with MemAug at toy scale, trained on the long-video recall
suite (`research/recall/recall_suite.py`, one flash per video: `ONE_FLASH`) by `research/recall/recall_curriculum.py`
({variant}, seed {seed}; stages {stages}, batches of {batch}, on a vision tower pretrained for the suite's world). It
answers three questions about a coloured shape flashed for 2 or 3 seconds in a video of up to an hour (its colour,
its shape, the background when it flashed), and nothing else.

Held-out accuracy (exact answers, 3 questions per video; chance 23.6 %; trained on 1.5-3 min videos only):
{accuracy}.

Architecture: a 2-layer SigLIP tower (32 px frames, 8 px patches) pretrained to tell backgrounds, colours and
shapes apart, then frozen; 2 x 2 memory grid; spatial and temporal forgetting to 64 frames x 1 token; 2 MemAug
blocks; a 2-layer Qwen2 decoder (width 128) with a 600-token BPE vocabulary. Load with
`AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)`; see demo.py.
"""


def export(args: argparse.Namespace, run_dir: str, variant: str, seed: int, result: dict) -> None:
    """Export one trained model of this run, with a model card, to --export-to (the package's embedded default)."""
    from research.recall.recall_model import export_recall_model

    final = result["final"]
    accuracy = ", ".join(
        f"{final[t]:.1f} % on {SETS[t].minutes[0]:g}-{SETS[t].minutes[1]:g} min videos" for t in args.tests
    )
    card = MODEL_CARD.format(variant=variant, seed=seed, stages=" then ".join(args.stages), batch=args.batch_size,
                             accuracy=accuracy)  # fmt: skip
    export_recall_model(f"{run_dir}/model-{variant}-{seed}", args.export_to, card, remote_code=False)
    print(f"exported {variant} seed {seed} to {args.export_to}")


if __name__ == "__main__":
    sys.exit(main())

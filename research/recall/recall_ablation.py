"""The paper's compression ablation (its Table 5) in miniature, on the long-video recall suite, end to end.

    .venv/bin/python research/recall/recall_ablation.py       # the README table (about an hour, 2 cores)
    .venv/bin/python research/recall/recall_ablation.py --seeds 0 --variants memaug uniform --train-videos 20 \\
        --test-videos 6 --max-steps 20 --workdir /tmp/recall-smoke         # a smoke run
    .venv/bin/python research/recall/recall_ablation.py --form needle --min-minutes 3 --max-minutes 6 \\
        --variants memaug uniform random keyframe-vision --curriculum --max-steps 700 --batch-size 8 \\
        --workdir .cache/recall-needle --json research/recall/results/recall_ablation_needle.json \\
        --markdown research/recall/results/recall_ablation_needle.md           # the needle form (16 kept frames)

1. `research.recall.recall_suite`: train and test videos (5 to 60 minutes, 1 fps, disjoint) with their questions;
   the VideoMarathon builder turns the train rows into chat rows.
2. `dataset_builder.extract_features`: the memory repository of every video, once, with the one frozen tower that
   every variant shares (`research.recall.recall_model.recall_tower`: pretrained for the suite's world, as the
   paper's SigLIP is for the real one; `--random-tower` for a random one).
3. For every variant and seed, `train.py` (stage 3 on the cached features), then `evaluate.py` (lmms-eval's CLI on
   the `recall` task), each a child process exactly as a user would run it.
4. A table of accuracy per variant, per recall task and per video length (mean and spread over seeds), printed and
   written to `--json` and `--markdown` (atomically); with `--form needle`, also how often the asked-about needle
   is among the frames each model keeps for its decoder, at init and after training (`needle_kept`).

Every step resumes: finished videos, features, trained models and evaluations are kept, a killed training run
continues from its last checkpoint, so rerunning the command after a kill finishes the work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from benchmarks.dataset_building import machine_info  # noqa: E402
from dataset_builder.media import write_json_atomically  # noqa: E402
from hour_llava_lmms.evaluation import length_bucket, write_atomically  # noqa: E402
from research.recall.recall_model import (  # noqa: E402
    VARIANTS,
    kept_frames_budget,
    recall_tower,
    shared_tower_paths,
    write_recall_init,
)
from research.recall.recall_suite import TASK_OF, RecallSpec, grouped_chat, write_recall_suite  # noqa: E402

INIT_LOCK = threading.Lock()
KEPT_LOCK = threading.Lock()  # `asked_flash_kept` patches the model module while it records: one run at a time
HAND_MADE = ("uniform", "random", "keyframe", "question", "keyframe-vision")
# Hand-made criteria that training cannot move: no features (uniform, random) or the frozen tower's. `keyframe` and
# `question` score frames on the projected memory (and `question` on the decoder's embeddings), which training moves.
FIXED = ("uniform", "random", "keyframe-vision")
DEFAULT_VARIANTS = ("memaug", *HAND_MADE[:4])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".cache", "recall"))
    parser.add_argument(
        "--form",
        choices=("full", "needle"),
        default="full",
        help="the suite's full form (five tasks, up to three flashes) or its needle form (a flash "
        "every 5-12 s, questions about the one of a unique colour: research.recall.recall_suite.NEEDLE)",
    )
    parser.add_argument(
        "--needle-colour",
        default="pink",
        help="needle form: every needle this colour (the pink* sets of recall_curriculum.py), or 'any'",
    )
    parser.add_argument("--kept-frames", type=int, default=None,
                        help="frames temporal forgetting keeps of every video, for every variant but `full` "
                        "(default: the recall model's 1/4, 32 to 64 frames; 16 with --form needle)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-videos", type=int, default=300)
    parser.add_argument("--test-videos", type=int, default=60)
    parser.add_argument("--min-minutes", type=float, default=5.0)
    parser.add_argument("--max-minutes", type=float, default=60.0)
    parser.add_argument("--full-max-minutes", type=float, default=10.0,
                        help="the no-forgetting bound trains and tests on videos up to this long only")  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=750)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=5, help="questions per training sample (one video)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs at a time, each single-threaded (an OpenMP team on a busy core stalls)")  # fmt: skip
    parser.add_argument("--curriculum", action="store_true",
                        help="train on short one-flash videos first (flash at second 0, then anywhere; "
                        "research/recall/recall_curriculum.py), then on the suite")  # fmt: skip
    parser.add_argument("--curriculum-steps", type=int, default=300, help="steps of each curriculum stage")
    parser.add_argument("--curriculum-videos", type=int, default=0, help="cap on each curriculum set's videos")
    parser.add_argument("--random-tower", action="store_true",
                        help="a random frozen tower instead of one pretrained for the suite's world")  # fmt: skip
    parser.add_argument("--export-seed", type=int, default=None,
                        help="copy MemAug's model of this seed to --export-to (the embedded default)")  # fmt: skip
    parser.add_argument("--export-to", default=os.path.join(ROOT, "checkpoints", "hour-llava-recall-tiny"))
    parser.add_argument("--json", default=os.path.join(HERE, "results", "recall_ablation.json"))
    parser.add_argument("--markdown", default=os.path.join(HERE, "results", "recall_ablation.md"))
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)  # the child processes run elsewhere (evaluate.py: its output folder)
    if args.form == "needle" and args.kept_frames is None:
        args.kept_frames = 16
    return args


def form_spec(args: argparse.Namespace) -> dict:
    """RecallSpec fields of the chosen form."""
    from research.recall.recall_suite import NEEDLE

    if args.form == "full":
        return {}
    return {**NEEDLE, "needle_colour": None if args.needle_colour == "any" else args.needle_colour}


def curriculum_stages(args: argparse.Namespace) -> tuple[str, ...]:
    """The recall_curriculum.py sets trained on before the suite: how to read a flash before having to find one."""
    if args.form == "full":
        return ("fixed", "moving")
    return ("needle-slow",) if args.needle_colour == "any" else ("pink-slow",)


def run(command: list[str], log: str) -> None:
    """Run a single-threaded child process, its output to `log`; a failure names the log."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    print("  $", " ".join(command[1:3]), "...", f"(log: {log})", flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    with open(log, "a") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode
    if code:
        raise SystemExit(f"{command[1]} failed with exit status {code}; see {log}")


# ---------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------
def prepare_data(args: argparse.Namespace) -> dict[str, str]:
    """Suites, chat rows of the train split (all videos, and the short ones for the bound), tower, features."""
    from dataset_builder import extract_features

    work = args.workdir
    span = {"min_minutes": args.min_minutes, "max_minutes": args.max_minutes}
    form = form_spec(args)
    train = write_recall_suite(
        f"{work}/train",
        RecallSpec(num_videos=args.train_videos, split="train", seed=1, log_uniform=True, **span, **form),
    )
    test = write_recall_suite(
        f"{work}/test", RecallSpec(num_videos=args.test_videos, split="test", seed=2, stratified=True, **span, **form)
    )
    extract_features.drop_features(f"{work}/features", train.replaced + test.replaced)  # rewritten videos
    # Up to `--group-size` questions about one video per training sample (the reference's grouped format): the
    # video's memory is encoded once for all of them.
    rows = grouped_chat(train, f"{work}/train_chat/train.parquet", args.group_size)
    short_chat = f"{work}/train_chat_short/train.parquet"
    os.makedirs(os.path.dirname(short_chat), exist_ok=True)
    rows.filter(lambda row: row["duration"] <= args.full_max_minutes * 60).to_parquet(short_chat + ".partial")
    os.replace(short_chat + ".partial", short_chat)
    # The questions and answers themselves: a run trained or scored on other rows is redone.
    digest = hashlib.sha256()
    for suite in (train, test):
        with open(suite.hub_rows, "rb") as handle:
            digest.update(handle.read())
    args.rows_digest = digest.hexdigest()[:16]
    tower, features = shared_tower_paths(work, args.random_tower)
    recall_tower(tower, pretrained=not args.random_tower)
    curriculum_features = shared_tower_paths(f"{work}/curriculum", args.random_tower)[1]
    if args.curriculum:
        from research.recall.recall_curriculum import prepare as prepare_curriculum

        prepare_curriculum(f"{work}/curriculum", tower, curriculum_features, names=curriculum_stages(args),
                           max_videos=args.curriculum_videos)  # fmt: skip

    def extract(suite) -> None:
        run([sys.executable, "-m", "dataset_builder.extract_features", "--model", tower, "--video-root",
             suite.video_root, "--output-dir", features, "--threads", "1"],
            f"{work}/logs/features-{os.path.basename(suite.root)}.log")  # fmt: skip

    with ThreadPoolExecutor(args.jobs) as pool:  # the two suites side by side, one thread each
        list(pool.map(extract, (train, test)))
    if args.form == "needle":  # one question per row, as lmms-eval asks them, for `needle_kept`
        grouped_chat(test, f"{work}/test_chat/train.parquet", 1)
    return {"train_videos": train.video_root, "test": f"{work}/test", "test_videos": test.video_root,
            "test_chat": f"{work}/test_chat/train.parquet", "tower": tower, "features": features,
            "curriculum_features": curriculum_features}  # fmt: skip


RUN_SETTINGS = ("train_videos", "test_videos", "min_minutes", "max_minutes", "full_max_minutes", "max_steps",
                "batch_size", "group_size", "learning_rate", "curriculum", "curriculum_steps", "random_tower",
                "rows_digest")  # fmt: skip


def forget_run_of_other_settings(args: argparse.Namespace, folder: str) -> None:
    """A run folder made with other data or training settings is deleted (its model would answer for them)."""
    import shutil

    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    if args.form != "full" or args.kept_frames or args.curriculum_videos:  # only then: older runs keep their keys
        settings |= {
            name: getattr(args, name) for name in ("form", "needle_colour", "kept_frames", "curriculum_videos")
        }
    path = os.path.join(folder, "settings.json")
    if os.path.exists(path):
        with open(path) as handle:
            if json.load(handle) == settings:
                return
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    write_json_atomically(path, settings)


def train_variant(args: argparse.Namespace, paths: dict[str, str], variant: str, seed: int) -> str:
    """`train.py` stage 3 from a fresh init of the variant (seeded, the shared tower); returns the model folder."""
    folder = f"{args.workdir}/runs/{variant}-seed{seed}"
    forget_run_of_other_settings(args, folder)
    model = f"{folder}/model"
    if os.path.exists(os.path.join(model, "training_summary.json")):
        return model
    init = f"{folder}/init"
    with INIT_LOCK:  # initialisation draws from torch's global generator: one thread at a time
        if not os.path.exists(os.path.join(init, "model.safetensors")):
            budget = kept_frames_budget(args.kept_frames) if args.kept_frames and variant != "full" else None
            write_recall_init(init, variant, seed=seed, tower_from=paths["tower"], overrides=budget)
    dataset = f"{args.workdir}/train_chat_short" if variant == "full" else f"{args.workdir}/train_chat"
    start = init
    if args.curriculum:  # the same two short stages for every variant, then the suite
        for stage in curriculum_stages(args):
            stage_dir = f"{args.workdir}/curriculum/{stage}"
            out = f"{folder}/curriculum-{stage}"
            if not os.path.exists(os.path.join(out, "training_summary.json")):
                run(train_command(args, start, f"{stage_dir}/chat", f"{stage_dir}/videos",
                                  paths["curriculum_features"], out, seed, args.curriculum_steps, 8),
                    f"{folder}/curriculum-{stage}.log")  # fmt: skip
            start = out
    run(train_command(args, start, dataset, paths["train_videos"], paths["features"], model, seed, args.max_steps,
                      args.batch_size), f"{folder}/train.log")  # fmt: skip
    return model


def train_command(args, start: str, dataset: str, media: str, features: str, out: str, seed: int, steps: int,
                  batch: int, save_steps: int = 250, keep_checkpoints: int | None = 1) -> list[str]:  # fmt: skip
    """`train.py` stage 3 from `start` on `dataset` (cached features), resumable, single rate, cosine schedule; a
    checkpoint every `save_steps`, the last `keep_checkpoints` kept (all of them when None: a learning curve)."""
    keep = [] if keep_checkpoints is None else ["--save_total_limit", str(keep_checkpoints)]
    return [
            sys.executable, "train.py", "--stage", "stage3", "--model_name_or_path", start, "--dataset", dataset,
            "--media_root", media, "--feature_dir", features, "--output_dir", out,
            "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
            "--lr_mode", "released", "--learning_rate", str(args.learning_rate), "--warmup_steps", "0.05",
            "--lr_scheduler_type", "cosine", "--seed", str(seed), "--data_seed", str(seed),
            "--save_strategy", "steps", "--save_steps", str(save_steps), *keep,
            "--resume_from_checkpoint", "auto", "--logging_steps", "25",
    ]  # fmt: skip


def evaluate_variant(args: argparse.Namespace, paths: dict[str, str], variant: str, seed: int, model: str) -> str:
    """`evaluate.py` on the recall task (cached features); returns the lmms-eval sample log."""
    out = f"{args.workdir}/runs/{variant}-seed{seed}/eval"
    if not sample_logs(out):  # evaluate.py writes its summary also when it fails: only a sample log means done
        run(
            [
                sys.executable, "evaluate.py", "--model", model, "--output", out, "--benchmarks", "recall",
                "--tasks-dir", os.path.join(ROOT, "research", "recall", "tasks"),
                "--data", f"recall={paths['test']}", "--features-dir", paths["features"],
                "--model-args", f"video_root={paths['test']}/videos",
            ],
            f"{args.workdir}/runs/{variant}-seed{seed}/eval.log",
        )  # fmt: skip
    return sample_log(out)


def needle_kept(args: argparse.Namespace, paths: dict[str, str], variant: str, seed: int) -> dict[str, float] | None:
    """How often (%) the asked-about needle flash is among the frames temporal forgetting keeps for the decoder, on
    the test questions (one forward each, the model's own selection: `recall_curriculum.asked_flash_kept`), for the
    run's init and its trained model: {"init", "trained"}. Needle form only, none for `full` (it keeps every frame);
    kept in the run folder, so a rerun reads it."""
    if args.form != "needle" or variant == "full":
        return None
    folder = f"{args.workdir}/runs/{variant}-seed{seed}"
    path = f"{folder}/needle_kept.json"
    if not os.path.exists(path):
        with KEPT_LOCK:
            import datasets
            import torch

            from hour_llava_training.collator import HourLlavaCollator
            from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor
            from research.recall.recall_curriculum import asked_flash_kept

            torch.set_num_threads(1)  # the other job's child process has the other core
            rows = list(datasets.load_dataset("parquet", data_files=paths["test_chat"])["train"])
            kept = {}
            for name, checkpoint in (("init", f"{folder}/init"), ("trained", f"{folder}/model")):
                collate = HourLlavaCollator(HourLlavaProcessor.from_pretrained(checkpoint),
                                            media_root=paths["test_videos"], feature_dir=paths["features"])  # fmt: skip
                model = HourLlavaForConditionalGeneration.from_pretrained(checkpoint)
                kept[name] = asked_flash_kept(model, rows, collate, f"{paths['test']}/annotations/timelines.json")
            write_json_atomically(path, kept)
    with open(path) as handle:
        return json.load(handle)


def sample_logs(eval_dir: str) -> list[str]:
    """The lmms-eval sample logs of the recall task under an evaluate.py output folder."""
    found = []
    for folder, _, files in os.walk(os.path.join(eval_dir, "lmms_eval")):
        found += [os.path.join(folder, f) for f in files if "hour_llava_recall" in f and f.endswith(".jsonl")]
    return found


def sample_log(eval_dir: str) -> str:
    """The newest lmms-eval sample log of the recall task under an evaluate.py output folder."""
    found = sample_logs(eval_dir)
    if not found:
        raise SystemExit(f"no recall sample log under {eval_dir}; delete the folder and rerun")
    return max(found, key=os.path.getmtime)


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------
def accuracies(samples_path: str, max_seconds: float | None = None) -> dict[str, float]:
    """Percent correct: overall, per recall task, per question type and per length bucket, from a sample log."""
    groups: dict[str, list[float]] = defaultdict(list)
    with open(samples_path) as handle:
        for line in handle:
            value = json.loads(line)["recall_acc"]
            if max_seconds is not None and value["duration"] > max_seconds:
                continue
            for key in ("all", value["recall_task"], value["question_type"], length_bucket(value["duration"])):
                groups[key].append(value["correct"])
    return {key: 100.0 * sum(values) / len(values) for key, values in groups.items()}


def logged_losses(args: argparse.Namespace, variant: str, seed: int) -> list[float]:
    """The training loss curve `train.py` logged for a run (every `--logging_steps`)."""
    with open(f"{args.workdir}/runs/{variant}-seed{seed}/model/training_summary.json") as handle:
        return json.load(handle)["losses"]


def columns(results: dict) -> list[str]:
    keys = {key for runs in results.values() for run in runs.values() for key in run}
    lengths = sorted((k for k in keys if k.endswith(" min")), key=lambda k: float(k.split("-")[0]))
    return ["all", *[t for t in TASK_OF if t in keys], "open-ended", "multiple-choice", *lengths]


def summarize(results: dict[str, dict[int, dict[str, float]]]) -> dict:
    """{variant: {column: {"mean", "std", "seeds"}}} over seeds."""
    table = {}
    for variant, runs in results.items():
        table[variant] = {}
        for column in columns(results):
            values = [run[column] for run in runs.values() if column in run]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                table[variant][column] = {"mean": statistics.fmean(values), "std": spread, "seeds": values}
    return table


def summarize_kept(kept: dict[str, dict[int, dict[str, float] | None]]) -> dict:
    """{variant: {"init", "trained": {"mean", "seeds"}}} of `needle_kept` over seeds (variants that have it)."""
    table = {}
    for variant, runs in kept.items():
        measured = [run for run in runs.values() if run]
        if measured:
            table[variant] = {
                key: {"mean": statistics.fmean(run[key] for run in measured), "seeds": [run[key] for run in measured]}
                for key in ("init", "trained")
            }
    return table


def kept_cell(runs: dict | None) -> str:
    """The cell "mean init → mean trained (per seed)" of a `summarize_kept` row."""
    if not runs:
        return ""
    seeds = zip(runs["init"]["seeds"], runs["trained"]["seeds"], strict=True)
    return (
        f"{runs['init']['mean']:.0f} → {runs['trained']['mean']:.0f} ("
        + ", ".join(f"{a:.0f}→{b:.0f}" for a, b in seeds)
        + ")"
    )


def markdown(table: dict, note: str, kept: dict | None = None) -> str:
    cols = columns({v: {0: {c: 0 for c in row}} for v, row in table.items()})
    extra = ["needle kept, init → trained"] if kept else []
    lines = ["| variant | " + " | ".join(cols + extra) + " |", "|---" * (len(cols) + len(extra) + 1) + "|"]
    for variant, row in table.items():
        cells = [f"{row[c]['mean']:.1f} ± {row[c]['std']:.1f}" if c in row else "" for c in cols]
        if kept:
            cells.append(kept_cell(kept.get(variant)))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{note}\n"


def verdict(table: dict) -> dict:
    """MemAug's lead over the best hand-made compression, against the seed spread of the two; and the same over the
    best of those whose criterion training cannot move (`FIXED`), where any were run."""
    result = {}
    for prefix, group in (("", HAND_MADE), ("fixed_", FIXED)):
        made = [v for v in group if v in table]
        if "memaug" not in table or not made:
            continue
        best = max(made, key=lambda v: table[v]["all"]["mean"])
        lead = table["memaug"]["all"]["mean"] - table[best]["all"]["mean"]
        spread = max(table["memaug"]["all"]["std"], table[best]["all"]["std"])
        result |= {
            f"best_{prefix}hand_made": best,
            f"memaug_lead{'_over_fixed' if prefix else ''}": lead,
            f"largest_seed_std{'_fixed' if prefix else ''}": spread,
            f"lead_exceeds_spread{'_fixed' if prefix else ''}": lead > spread,
        }
    return result


def export_default(args: argparse.Namespace, results: dict) -> None:
    """Export the chosen MemAug model (weights, processor, remote code) with a model card to `--export-to`."""
    from research.recall.recall_model import export_recall_model

    accuracy = results["memaug"][args.export_seed]
    by_task = ", ".join(f"{task} {accuracy[task]:.0f} %" for task in TASK_OF if task in accuracy)
    card = MODEL_CARD.format(seed=args.export_seed, all=accuracy["all"], by_task=by_task, steps=args.max_steps,
                             videos=args.train_videos, test=args.test_videos, batch=args.batch_size)  # fmt: skip
    export_recall_model(
        f"{args.workdir}/runs/memaug-seed{args.export_seed}/model", args.export_to, card, remote_code=False
    )
    print(f"exported memaug seed {args.export_seed} to {args.export_to}")


MODEL_CARD = """---
library_name: transformers
pipeline_tag: video-text-to-text
tags: [hour-llava, long-video, memaug, tiny]
---
# hour-llava-recall-tiny

The embedded default model of the package: Hour-LLaVA with MemAug at toy scale, trained from scratch on the
long-video recall suite (`research/recall/recall_suite.py`) by `research/recall/recall_ablation.py` (seed {seed},
{videos} training videos of 5 to 60 minutes, {steps} steps of {batch}, stage 3 on cached features). It answers
questions about coloured shapes flashed for 2 or 3 seconds in videos of up to an hour, and nothing else.

Held-out accuracy ({test} videos x 10 questions): {all:.1f} % ({by_task}). The comparison with hand-made compression
is in research/recall/results/recall_ablation.md.

Architecture: frozen random SigLIP tower (2 layers, 32 px frames, 8 px patches), 2 x 2 memory grid, spatial and
temporal forgetting to 64 frames x 1 token, 2 MemAug blocks, a 2-layer Qwen2 decoder (width 128) with a 600-token
BPE vocabulary. Load with `AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)`; see demo.py.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before = time.time(), os.getloadavg()
    paths = prepare_data(args)

    def one(job: tuple[str, int]) -> tuple[str, int, dict[str, float], dict[str, float] | None]:
        variant, seed = job
        print(f"{variant}, seed {seed}", flush=True)
        samples = evaluate_variant(args, paths, variant, seed, train_variant(args, paths, variant, seed))
        accuracy = accuracies(samples, args.full_max_minutes * 60 if variant == "full" else None)
        return variant, seed, accuracy, needle_kept(args, paths, variant, seed)

    results: dict[str, dict[int, dict[str, float]]] = {variant: {} for variant in args.variants}
    kept: dict[str, dict[int, dict[str, float] | None]] = {variant: {} for variant in args.variants}
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        for variant, seed, accuracy, needle in pool.map(one, jobs):
            results[variant][seed], kept[variant][seed] = accuracy, needle
    table, kept_table = summarize(results), summarize_kept(kept)
    questions = 10 if args.form == "full" else 2
    budget = f"{args.kept_frames} frames" if args.kept_frames else "64 frames"
    note = (
        f"Accuracy (%) on {args.test_videos} test videos x {questions} questions ({args.form} form), mean ± standard "
        f"deviation over seeds {args.seeds}; {args.train_videos} training videos, {args.max_steps} steps of "
        f"{args.batch_size}. Same decoder budget for all but `full` ({budget} x (1 token + newline))"
        + (f"; `full` keeps every token and is trained and tested on videos up to {args.full_max_minutes:g} min."
           if "full" in table else ".")
        + (" Needle kept: how often (%) the asked-about flash is among the frames forgetting keeps for the decoder "
           "(test questions, the model's own selection), at init and after training, mean (per seed)."
           if kept_table else "")
    )  # fmt: skip
    report = {
        "benchmark": "recall_ablation",
        "args": vars(args),
        "machine": machine_info(load_before),
        "seconds": round(time.time() - started, 1),
        "table": table,
        "verdict": verdict(table),
        "runs": {v: {str(s): r for s, r in runs.items()} for v, runs in results.items()},
        "needle_kept": kept_table,
        "training_losses": {v: {str(s): logged_losses(args, v, s) for s in runs} for v, runs in results.items()},
    }
    if args.export_seed is not None:
        export_default(args, results)
    text = markdown(table, note, kept_table)
    print(text)
    print(json.dumps(report["verdict"]))
    write_json_atomically(args.json, report)
    write_atomically(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

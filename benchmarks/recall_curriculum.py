"""MemAug against hand-made compression on the one-flash recall suite, with a curriculum from short to hour-long videos.

    .venv/bin/python benchmarks/recall_curriculum.py \
        --stages fixed:300 moving:400 medium:400 long:400 --tests test test-medium test-long \
        --variants memaug uniform random keyframe question --seeds 0 1 --export memaug:0    # the README table

The suite's easiest form (`dataset_builder.recall_suite.ONE_FLASH`: one coloured shape flashed for 2 or 3 s,
scenes of 5 to 15 s, open-ended colour, shape and scene questions; chance 23.6 %), trained in stages:

- `fixed`: 1.5-3 min videos with the flash at second 0, a frame uniform forgetting always keeps, so the decoder
  learns to read a flash before it must find one;
- `moving`: 1.5-3 min videos, the flash anywhere;
- `medium`: 5-15 min videos; `long`: 15-60 min videos (held out: `test`, `test-medium`, and `test-long`, 30-60 min).

Every variant has the same decoder budget (64 frames x 1 token + newline) and shares one frozen tower, pretrained
for the suite's world (`hour_llava_training.recall.recall_tower`; `--random-tower` for a random one, with which no
variant leaves chance). Each variant and seed starts from a fresh init and is trained in a child process (AdamW,
constant rate, the package's collator on cached features, one thread); every `--eval-every` steps the held-out
accuracy of the first answer token (teacher-forced; cheap, and kind where answers share a first token) on every
`--tests` set is recorded, and at the end the exact-answer accuracy (every answer token and the end of turn are the
greedy choice, i.e. generation writes exactly the answer), which the table reports. A finished run is reused under
the same settings. Results: --json and --markdown (atomically), the trained models under
`<workdir>/runs/<settings>/`; `--export VARIANT:SEED` makes one the embedded default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from dataset_builder.media import write_json_atomically  # noqa: E402
from hour_llava_lmms.evaluation import write_atomically  # noqa: E402

SHORT, MEDIUM, LONG, HOUR = (1.5, 3.0), (5.0, 15.0), (15.0, 60.0), (30.0, 60.0)  # video lengths, minutes
# name: (videos, seed, flash_start, lengths); "test*" sets are held out, the others are training stages.
SETS = {"fixed": (600, 8, 0, SHORT), "moving": (600, 9, None, SHORT), "test": (60, 10, None, SHORT),
        "medium": (400, 11, None, MEDIUM), "long": (300, 12, None, LONG),
        "test-medium": (40, 13, None, MEDIUM), "test-long": (40, 14, None, HOUR)}  # fmt: skip


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


def prepare(
    work: str, tower: str, features: str, names: tuple[str, ...] = ("fixed", "moving", "test"), max_videos: int = 0
) -> None:
    """The sets `names` of SETS (at most `max_videos` videos each, if set) as grouped chat rows (3 questions per
    sample) and their features in `features`, by `tower` (a checkpoint folder, `recall_tower`)."""
    from dataset_builder import extract_features
    from dataset_builder.recall_suite import ONE_FLASH, RecallSpec, grouped_chat, write_recall_suite

    for name in names:
        videos, seed, start, (shortest, longest) = SETS[name]
        videos = min(videos, max_videos or videos)
        spec = RecallSpec(num_videos=videos, split=name, seed=seed, flash_start=start, min_minutes=shortest,
                          max_minutes=longest, **ONE_FLASH)  # fmt: skip
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


def worker(args: argparse.Namespace, variant: str, seed: int, out: str) -> None:
    """Train one variant through every stage in this process and write its accuracy curve (first answer token) and
    final exact-answer accuracy to `out`; with --rescore, only score the model an earlier run saved."""
    import torch

    from hour_llava_training.recall import write_recall_init
    from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor

    torch.set_num_threads(1)
    stages = parse_stages(args.stages)
    trained = f"{os.path.dirname(out)}/model-{variant}-{seed}"
    if args.rescore:
        model = HourLlavaForConditionalGeneration.from_pretrained(trained)
        rows, collate = load_sets(args, HourLlavaProcessor.from_pretrained(trained), args.tests)
        with open(out) as handle:
            result = json.load(handle)
        result["final"] = {name: held_out(model, rows[name], collate[name], whole=True) for name in args.tests}
        write_json_atomically(out, result)
        return
    tower, _ = tower_and_features(args)
    init = write_recall_init(f"{os.path.dirname(out)}/init-{variant}-{seed}", variant, seed=seed, tower_from=tower)
    model = HourLlavaForConditionalGeneration.from_pretrained(init)
    processor = HourLlavaProcessor.from_pretrained(init)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith("model.vision_tower")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    rows, collate = load_sets(args, processor, sorted({name for name, _ in stages} | set(args.tests)))

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
    # The trained model, loadable like any checkpoint (the embedded default is exported from here).
    model.save_pretrained(trained)
    processor.save_pretrained(trained)
    write_json_atomically(out, {"variant": variant, "seed": seed, "curve": curve, "final": final,
                                "seconds": round(time.time() - started, 1)})  # fmt: skip


def tower_and_features(args: argparse.Namespace) -> tuple[str, str]:
    """The shared tower (pretrained for the suite's world unless --random-tower) and its feature folder."""
    from hour_llava_training.recall import shared_tower_paths

    return shared_tower_paths(args.workdir, args.random_tower)


def settings_key(args: argparse.Namespace) -> str:
    """A short hash of everything that changes a worker's result except its variant and seed."""
    keys = ("stages", "tests", "batch_size", "learning_rate", "eval_every", "max_videos", "random_tower")
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
    from hour_llava_training.recall import recall_tower

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
        if "final" not in result:  # a run finished before exact-answer scoring existed: score its saved model
            command = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:]), "--rescore", "--worker",
                       variant, str(seed), out]  # fmt: skip
            subprocess.run(command, check=True, env=env, cwd=ROOT)
            with open(out) as handle:
                result = json.load(handle)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, [(v, s) for s in args.seeds for v in args.variants]))
    for test in args.tests:
        print(f"\nheld-out accuracy (%) on {test!r} ({SETS[test][3][0]:g} to {SETS[test][3][1]:g} min)")
        print(
            "| variant | seed | " + " | ".join(f"step {p['step']} ({p['stage']})" for p in results[0]["curve"]) + " |"
        )
        for result in results:
            cells = " | ".join(f"{p['accuracy'][test]:.1f}" for p in result["curve"])
            print(f"| {result['variant']} | {result['seed']} | {cells} |")
    table, markdown = final_table(results, args.tests)
    print("\n" + markdown)
    arguments = {k: v for k, v in vars(args).items() if k != "worker"}
    report = {"benchmark": "recall_curriculum", "run_dir": os.path.relpath(run_dir, ROOT), "args": arguments,
              "chance_percent": 100 * (1 / 4 + 1 / 3 + 1 / 8) / 3, "final": table, "results": results,
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
    """Exact-answer accuracy of the trained models, mean and standard deviation over seeds, per variant and held-out
    set, as a dict and a markdown table (with each set's video lengths)."""
    table: dict[str, dict[str, dict]] = {}
    for variant in dict.fromkeys(r["variant"] for r in results):
        finals = [r["final"] for r in results if r["variant"] == variant]
        table[variant] = {test: {"mean": statistics.fmean(f[test] for f in finals),
                                 "std": statistics.pstdev(f[test] for f in finals) if len(finals) > 1 else 0.0,
                                 "seeds": len(finals)} for test in tests}  # fmt: skip
    header = " | ".join(f"{test} ({SETS[test][3][0]:g}-{SETS[test][3][1]:g} min)" for test in tests)
    lines = [f"| variant | seeds | {header} |", "|---|---|" + "---|" * len(tests)]
    for variant, cells in table.items():
        values = " | ".join(f"{cells[t]['mean']:.1f} ± {cells[t]['std']:.1f}" for t in tests)
        lines.append(f"| {variant} | {cells[tests[0]]['seeds']} | {values} |")
    return table, "\n".join(lines)


MODEL_CARD = """---
library_name: transformers
pipeline_tag: video-text-to-text
tags: [hour-llava, long-video, memaug, tiny]
---
# hour-llava-recall-tiny

The embedded default model of the package: Hour-LLaVA with MemAug at toy scale, trained on the long-video recall
suite (`dataset_builder/recall_suite.py`, one flash per video: `ONE_FLASH`) by `benchmarks/recall_curriculum.py`
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
    from hour_llava_training.recall import export_recall_model

    final = result["final"]
    accuracy = ", ".join(f"{final[t]:.1f} % on {SETS[t][3][0]:g}-{SETS[t][3][1]:g} min videos" for t in args.tests)
    card = MODEL_CARD.format(variant=variant, seed=seed, stages=" then ".join(args.stages), batch=args.batch_size,
                             accuracy=accuracy)  # fmt: skip
    export_recall_model(f"{run_dir}/model-{variant}-{seed}", args.export_to, card)
    print(f"exported {variant} seed {seed} to {args.export_to}")


if __name__ == "__main__":
    sys.exit(main())

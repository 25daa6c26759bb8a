"""Every ```python and ```bash block of README.md and docs/*.md runs as written.

The convention (docs/README.md says the same for writers):

- A page's blocks run in order, in one temporary folder per page that looks like a clone (a link to every top-level
  file and folder of the repository) with `python` and the console scripts of this environment first on PATH,
  `HF_HUB_OFFLINE=1` and an empty HF_HOME. ```python blocks share one namespace per page (a reader runs them top
  to bottom); ```bash blocks run with `bash -e -o pipefail`. Other fences (```text, ```yaml, ```json, ```console)
  are not run; indented code blocks and unlabelled fences are refused: say what a block is.
- What a block needs is said in an HTML comment right before it (blank lines between are fine), items separated
  by `;`:
    <!-- test: setup=tiny-checkpoint,video; replace=path/or/repo->tiny-checkpoint -->
  `setup=NAMES`: fixtures linked into the folder first: `tiny-checkpoint` (./tiny-checkpoint, a tiny random model
  whose videos need 8 frames), `video` (./film.mp4, 10 s of synthetic video), `synthetic-data` (./synthetic: the
  synthetic VideoMarathon, `hour-llava-build-dataset synthetic`), `tiny-benchmarks` (./tiny-benchmarks:
  `python -m hour_llava_testing.tiny_benchmarks`). `replace=OLD->NEW`: substitute a placeholder before running
  (repeatable). `timeout=SECONDS` (default 600).
  `skip: REASON` (alone in its comment): not run; the reason is printed. Skips are for what cannot run here
  (the Hub, a GPU, hours of compute) and must stay rare: a block that would take minutes is made cheap by its own
  documented flags (`--max-steps 2`, `--limit 2`), not skipped.
- What the blocks write at the top of the folder must be ignored by .gitignore (a reader runs them in a clone).
- A block fails on an exception or a non-zero exit status; the test names the page and line. A block's output (what
  a python block prints, a bash block's stdout and stderr) is kept, and a page whose text quotes outputs has them
  checked (`PAGE_CHECKS`).

`python tests/test_docs.py [--keep-going] [PAGE ...]` runs pages outside pytest and prints each block's result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clone_files import clone_files

REPO = Path(__file__).resolve().parents[1]
RUN = ("python", "bash")
NOT_RUN = ("text", "yaml", "json", "console", "toml", "jinja", "mermaid", "markdown", "diff")
DEFAULT_TIMEOUT = 600
DIRECTIVE = re.compile(r"<!--\s*test:(.*?)-->", re.S)
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    setup: list[str] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    timeout: int = DEFAULT_TIMEOUT
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def source(self) -> str:
        code = self.code
        for old, new in self.replace:
            if old not in code:
                raise ValueError(f"{self.where}: replace={old}->{new}, but the block has no {old!r}")
            code = code.replace(old, new)
        return code


class DocsConventionError(ValueError):
    """A page breaks the convention (unlabelled or indented code, a directive that is not understood)."""


def parse_directive(text: str, where: str) -> dict:
    options: dict = {"setup": [], "replace": []}
    if text.strip().startswith("skip"):  # the reason is the rest of the comment, `;` and all
        reason = text.strip()[4:].lstrip(" :").strip()
        if not reason:
            raise DocsConventionError(f"{where}: `skip` needs a reason (skip: needs a GPU)")
        return options | {"skip": reason}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        if item.startswith("setup="):
            names = [name.strip() for name in item[6:].split(",") if name.strip()]
            unknown = [name for name in names if name not in FIXTURES]
            if unknown:
                raise DocsConventionError(f"{where}: unknown setup {unknown}; known: {sorted(FIXTURES)}")
            options["setup"] += names
        elif item.startswith("replace=") and "->" in item:
            old, new = item[8:].split("->", 1)
            options["replace"].append((old.strip(), new.strip()))
        elif item.startswith("timeout="):
            options["timeout"] = int(item[8:])
        else:
            raise DocsConventionError(f"{where}: directive item {item!r} is not setup=, replace=A->B, timeout=, skip:")
    return options


def parse_page(path: Path, page: str | None = None) -> list[Block]:
    """The page's runnable blocks with their directives; raises DocsConventionError on unlabelled code."""
    page = page or path.relative_to(REPO).as_posix()
    lines = path.read_text().splitlines()
    blocks, pending, pending_line, index = [], None, 0, 0
    previous_blank = True
    while index < len(lines):
        line = lines[index]
        directive = DIRECTIVE.search(line)
        if directive and line.strip().startswith("<!--"):
            pending, pending_line = parse_directive(directive.group(1), f"{page}:{index + 1}"), index + 1
            index += 1
            continue
        match = FENCE.match(line)
        if match:
            info = match.group("info").strip().split()
            lang = info[0].lower() if info else ""
            end = index + 1
            while end < len(lines) and not lines[end].strip().startswith(match.group("fence")):
                end += 1
            if lang not in RUN + NOT_RUN:
                raise DocsConventionError(f"{page}:{index + 1}: label the fence (```python, ```bash or ```text)")
            code = "\n".join(text[len(match.group("indent")) :] for text in lines[index + 1 : end]) + "\n"
            if lang in RUN:
                blocks.append(Block(page, index + 1, lang, code, **(pending or {})))
            elif pending:
                raise DocsConventionError(f"{page}:{pending_line}: a test directive before a ```{lang} block")
            pending, index, previous_blank = None, end + 1, False
            continue
        if line.startswith("    ") and line.strip() and previous_blank and not _in_list(lines, index):
            raise DocsConventionError(f"{page}:{index + 1}: indented code block; fence it as ```bash or ```text")
        if line.strip() and pending is not None:
            raise DocsConventionError(f"{page}:{pending_line}: a test directive must stand right before a block")
        previous_blank = not line.strip()
        index += 1
    return blocks


def _in_list(lines: list[str], index: int) -> bool:
    """An indented line that continues a list item (markdown lazy continuation), not code."""
    for back in range(index - 1, -1, -1):
        text = lines[back]
        if not text.strip():
            continue
        if text.startswith("    "):
            continue
        return bool(re.match(r"\s*([-*+]|\d+\.)\s", text))
    return False


# ---------------------------------------------------------------------------------------------------------------
# Fixtures a block can ask for (built once per run, linked into each page's folder)
# ---------------------------------------------------------------------------------------------------------------
def _tiny_checkpoint(target: Path) -> None:
    from hour_llava_testing.tiny_model import write_tiny_checkpoint

    write_tiny_checkpoint(target, video_min_frames=8)


def _video(target: Path) -> None:
    from dataset_builder.synthetic_video import write_video

    write_video(target, num_frames=40, fps=4, width=64, height=48)


def _synthetic_data(target: Path) -> None:
    from dataset_builder.cli import main

    args = ["synthetic", str(target), "--videos", "2", "--min-seconds", "4", "--max-seconds", "6"]
    assert main([*args, "--width", "64", "--height", "48"]) == 0


def _tiny_benchmarks(target: Path) -> None:
    from hour_llava_testing.tiny_benchmarks import main

    assert main([str(target)]) == 0


FIXTURES = {
    "tiny-checkpoint": ("tiny-checkpoint", _tiny_checkpoint),
    "video": ("film.mp4", _video),
    "synthetic-data": ("synthetic", _synthetic_data),
    "tiny-benchmarks": ("tiny-benchmarks", _tiny_benchmarks),
}


def prepare_fixture(name: str, store: Path) -> Path:
    file_name, build = FIXTURES[name]
    target = store / file_name
    if not target.exists():
        build(target)
    return target


def clone_view(folder: Path) -> None:
    """Link every top-level entry of the repository into `folder`, so commands written for a clone run there."""
    for top in sorted({name.split("/")[0] for name in clone_files()}):
        if not (folder / top).exists():
            (folder / top).symlink_to(REPO / top)


DRIVER = r"""
import contextlib, io, json, os, subprocess, sys, time, traceback

blocks, keep_going = json.load(open(sys.argv[1])), sys.argv[2] == "1"
namespace = {"__name__": "__main__"}
for block in blocks:
    started, status, output = time.time(), "passed", ""
    if block["skip"]:
        status, output = "skipped", block["skip"]
    elif block["lang"] == "python":
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(block["code"], block["where"], "exec"), namespace)
        except BaseException:
            status, output = "failed", traceback.format_exc()
        output = printed.getvalue() + output
    else:
        try:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]], capture_output=True,
                                  text=True, timeout=block["timeout"])
            output = done.stdout[-2000:] + done.stderr
            status = "passed" if done.returncode == 0 else f"failed (exit status {done.returncode})"
        except subprocess.TimeoutExpired:
            status, output = f"failed (over {block['timeout']} s)", ""
    result = {"where": block["where"], "status": status, "seconds": round(time.time() - started, 1),
              "output": output[-4000:]}
    sys.stdout.flush()
    sys.stderr.flush()
    print("\n@@DOCS@@" + json.dumps(result), flush=True)
    if status.startswith("failed") and not keep_going:
        break
"""


def run_page(
    page: str, blocks: list[Block], store: Path, keep_going: bool = False, written: list[str] | None = None
) -> list[dict]:
    """Run a page's blocks in a fresh clone-like folder; returns one result per block run (or skipped).
    written: filled with the top-level files and folders the blocks created (folders end in `/`)."""
    with tempfile.TemporaryDirectory(prefix="docs-") as tmp:
        folder = Path(tmp) / "repo"
        folder.mkdir()
        for name in dict.fromkeys(name for block in blocks for name in block.setup):
            (folder / FIXTURES[name][0]).symlink_to(prepare_fixture(name, store))
        clone_view(folder)
        payload = [
            {"where": block.where, "lang": block.lang, "code": block.source(), "skip": block.skip}
            | {"timeout": block.timeout}
            for block in blocks
        ]
        (Path(tmp) / "blocks.json").write_text(json.dumps(payload))
        (Path(tmp) / "driver.py").write_text(DRIVER)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            HF_HUB_OFFLINE="1",
            HF_HOME=str(Path(tmp) / "hf_home"),
            TOKENIZERS_PARALLELISM="false",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        )
        total = sum(block.timeout for block in blocks) + 60
        process = subprocess.run(
            [sys.executable, str(Path(tmp) / "driver.py"), str(Path(tmp) / "blocks.json"), "1" if keep_going else "0"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=total,
        )
        if written is not None:
            created = [entry for entry in sorted(folder.iterdir()) if not entry.is_symlink()]
            written += [entry.name + "/" * entry.is_dir() for entry in created]
    results = [json.loads(chunk.split("\n", 1)[0]) for chunk in process.stdout.split("\n@@DOCS@@")[1:]]
    if process.returncode != 0:
        results.append({"where": page, "status": "failed (driver)", "seconds": 0, "output": process.stderr[-4000:]})
    return results


def check_processor_page(printed: str) -> None:
    """docs/processor.md prints what it says on its 20-second, 200-frame film."""
    assert "tensor([128])" in printed  # 20 one-per-second frames are fewer than min_frames: 128 spread evenly
    assert "[0 1 3 4 6]" in printed  # the first sampled indices: linspace(0, 199, 128)
    assert "tensor([40]) tensor([16])" in printed  # fps=2 over 20 s; max_frames=16
    assert "num_frames=32: Hour-LLaVA does not take a fixed frame count" in printed
    assert "TurnFormat(header=" in printed
    budget = re.search(r"^\[(\d+)\] (\d+)$", printed, flags=re.M)
    assert budget and budget.group(1) == budget.group(2)  # _get_num_multimodal_tokens == placeholders written
    assert "missing.mp4 file not found" in printed


# What a page's blocks print (passed blocks' outputs, in order) -> assertions on it.
PAGE_CHECKS = {"docs/processor.md": check_processor_page}


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def page_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.fixture(scope="session")
def fixture_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs-fixtures")


def not_ignored(names: list[str]) -> list[str]:
    """The repository-root names .gitignore does not ignore (a reader who runs the page finds them in git status)."""
    command = ["git", "check-ignore", "--no-index", "--stdin"]
    done = subprocess.run(command, cwd=REPO, input="\n".join(names), capture_output=True, text=True)
    ignored = set(done.stdout.splitlines())
    return [name for name in names if name not in ignored]


@pytest.mark.parametrize("path", pages(), ids=page_id)
def test_page_blocks_run(path, fixture_store, capsys):
    blocks = parse_page(path)
    written: list[str] = []
    results = run_page(page_id(path), blocks, fixture_store, written=written)
    with capsys.disabled():
        for result in results:
            if result["status"] == "skipped":
                print(f"\n{result['where']}: skipped: {result['output']}")
    failed = [result for result in results if result["status"].startswith("failed")]
    assert not failed, "\n\n".join(f"{r['where']}: {r['status']}\n{r['output']}" for r in failed)
    assert len(results) == len(blocks), f"{len(blocks)} blocks, {len(results)} ran"
    if page_id(path) in PAGE_CHECKS:
        PAGE_CHECKS[page_id(path)]("".join(r["output"] for r in results if r["status"] == "passed"))
    left = not_ignored(written)
    assert not left, f"the blocks write {left} at the repository root: add them to .gitignore"


def test_the_convention_is_enforced(tmp_path):
    """Unlabelled and indented code, directives that mean nothing and skips without a reason are refused; a
    replace that matches nothing is an error (else a placeholder could silently stay)."""
    cases = {
        "```\nls\n```\n": "label the fence",
        "Run:\n\n    python train.py\n": "indented code block",
        "<!-- test: skip -->\n```bash\nls\n```\n": "needs a reason",
        "<!-- test: setup=gpu -->\n```bash\nls\n```\n": "unknown setup",
        "<!-- test: fast -->\n```bash\nls\n```\n": "is not setup=",
    }
    for number, (text, message) in enumerate(cases.items()):
        page = tmp_path / f"case{number}.md"
        page.write_text(text)
        with pytest.raises(DocsConventionError, match=message):
            parse_page(page, page.name)
    block = Block("x.md", 1, "python", "print(1)\n", replace=[("path/or/repo", "tiny")])
    with pytest.raises(ValueError, match="has no"):
        block.source()


def test_a_failing_block_fails_and_names_its_line(fixture_store):
    good = Block("x.md", 3, "python", "value = 41\nprint('value is', value)\n")
    uses = Block("x.md", 7, "python", "assert value + 1 == 42\n")
    bad = Block("x.md", 11, "bash", "echo about to fail\nfalse\necho never\n")
    after = Block("x.md", 15, "bash", "echo not reached\n")
    results = run_page("x.md", [good, uses, bad, after], fixture_store)
    assert [r["status"] for r in results] == ["passed", "passed", "failed (exit status 1)"]
    assert results[0]["output"] == "value is 41\n"  # what a python block prints is kept, for PAGE_CHECKS
    assert results[2]["where"] == "x.md:11" and "about to fail" in results[2]["output"]
    assert "never" not in results[2]["output"]


def test_what_a_page_writes_is_listed_and_must_be_ignored(fixture_store):
    """The clone's own entries (links) are not counted; what the blocks create is, and .gitignore must cover it."""
    block = Block("x.md", 1, "bash", "mkdir -p runs/a eval\ntouch film.mp4 stray.txt\n")
    written: list[str] = []
    assert run_page("x.md", [block], fixture_store, written=written)[0]["status"] == "passed"
    assert written == ["eval/", "film.mp4", "runs/", "stray.txt"]
    assert not_ignored(written) == ["stray.txt"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the code blocks of doc pages and print each one's result.")
    parser.add_argument("pages", nargs="*", help="pages (default: README.md and docs/*.md)")
    parser.add_argument("--keep-going", action="store_true", help="run a page's later blocks after a failure")
    args = parser.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="docs-fixtures-") as store:
        for path in [Path(page).resolve() for page in args.pages] or pages():
            try:
                blocks = parse_page(path)
            except DocsConventionError as error:
                print(f"{page_id(path)}: CONVENTION: {error}")
                failures += 1
                continue
            started, written = time.time(), []
            for result in run_page(page_id(path), blocks, Path(store), args.keep_going, written):
                failures += result["status"].startswith("failed")
                print(f"{result['where']}: {result['status']} ({result['seconds']} s)")
                if result["status"].startswith("failed"):
                    print("    " + result["output"].strip().replace("\n", "\n    ")[-1500:])
            if not_ignored(written):
                failures += 1
                print(f"{page_id(path)}: writes {not_ignored(written)} at the repository root: add to .gitignore")
            print(f"{page_id(path)}: {len(blocks)} blocks, {time.time() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())

"""`hour_llava_lmms/paper_table2.json` holds the paper's Table 2 exactly: every number is checked against the
markdown table in the project's reference copy of the paper's tables (`shared/reference/paper_tables.md`, next to
the repository or named by HOUR_LLAVA_PAPER_TABLES) and against the copy users read in docs/evaluation.md."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hour_llava_lmms.paper import BASELINES, paper_numbers

REPO = Path(__file__).resolve().parents[1]
HEADER = (
    "| model | input | TempCompass | LongVideoBench | Video-MME overall | Video-MME medium | Video-MME long | LVBench |"
)
COLUMNS = ("tempcompass", "longvideobench", "videomme", "videomme_medium", "videomme_long", "lvbench")


def reference_file() -> Path | None:
    """The shared reference copy: $HOUR_LLAVA_PAPER_TABLES, else `shared/reference/paper_tables.md` in a folder
    above the repository (the project's layout)."""
    if os.environ.get("HOUR_LLAVA_PAPER_TABLES"):
        return Path(os.environ["HOUR_LLAVA_PAPER_TABLES"])
    for folder in REPO.parents:
        candidate = folder / "shared" / "reference" / "paper_tables.md"
        if candidate.is_file():
            return candidate
    return None


def number(cell: str) -> float | None:
    return None if cell.strip() == "-" else float(cell)


def parse_table2(text: str) -> dict[str, dict]:
    """The Table 2 markdown table -> {model: {"input", column: value, column + "_subtitles": value}}."""
    lines = text.splitlines()
    start = lines.index(HEADER)
    models = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        name, source, *cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        row = {"input": source}
        for column, cell in zip(COLUMNS, cells, strict=True):
            if column.startswith("videomme"):
                plain, subtitles = (cell, cell) if cell == "-" else cell.split("/")
                row[column], row[f"{column}_subtitles"] = number(plain), number(subtitles)
            else:
                row[column] = number(cell)
        models[name] = row
    return models


def test_the_json_is_table_2_of_the_reference_file():
    path = reference_file()
    if path is None:
        pytest.skip("no shared/reference/paper_tables.md above the repository (set HOUR_LLAVA_PAPER_TABLES)")
    reference = parse_table2(path.read_text().split("## Table 2", 1)[1])
    assert paper_numbers()["models"] == reference


def test_the_json_is_the_table_in_the_docs():
    docs = parse_table2((REPO / "docs" / "evaluation.md").read_text())
    assert paper_numbers()["models"] == docs


def test_the_comparison_rows_are_in_the_table_with_every_benchmark():
    models = paper_numbers()["models"]
    assert models["Hour-LLaVA-7B"]["tempcompass"] == 68.1 and models["Hour-LLaVA-3B"]["tempcompass"] == 63.6
    for name in BASELINES:
        assert all(models[name][column] is not None for column in COLUMNS), name

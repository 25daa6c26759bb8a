"""From generated text to the answer a benchmark scores: bare option letters when the prompt asks for one.

TempCompass counts only answers that *are* a letter (or start with "A." / "A)"); LongVideoBench takes the first
capital A-E anywhere in the text. A model that says "The answer is (B)." therefore loses points it earned, so when a
prompt lists options and asks for a letter, the answer is reduced to that letter with lmms-eval's own extractor.
"""

from __future__ import annotations

import re

from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

ANSWER_FORMATS = ("auto", "letter", "text")
# "A. red", "(A) red", "A) red", "A: red" at the start of a line.
OPTION_LINE = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|:)\s+\S", re.MULTILINE)
LETTER_REQUEST = re.compile(
    r"option'?s? letter|option letter|letter \(A|the letter of|best option|with A, B|give the best option|"
    r"answer with the option",
    re.IGNORECASE,
)


def option_letters(prompt: str) -> list[str]:
    """The option letters a prompt lists, in order, when they run A, B, C, ... (at least two)."""
    letters = list(dict.fromkeys(OPTION_LINE.findall(prompt)))
    expected = [chr(ord("A") + i) for i in range(len(letters))]
    return letters if len(letters) >= 2 and letters == expected else []


def asks_for_letter(prompt: str) -> bool:
    """True when the prompt lists lettered options and asks for the letter."""
    return bool(option_letters(prompt)) and bool(LETTER_REQUEST.search(prompt))


def truncate_at_stop(text: str, until: list[str] | None) -> str:
    """Cut the text at the first stop string (lmms-eval's `until`)."""
    for stop in until or []:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def format_answer(text: str, prompt: str, answer_format: str = "auto") -> str:
    """The answer to return: the bare letter for letter questions (`auto` decides from the prompt, `letter` forces
    it where the prompt lists options), otherwise the stripped text. A letter question whose text names no option
    keeps its text, so the benchmark's own parser (or judge) sees what the model said."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format={answer_format!r}; expected one of {ANSWER_FORMATS}")
    text = text.strip()
    letters = option_letters(prompt)
    wants_letter = answer_format == "letter" or (answer_format == "auto" and asks_for_letter(prompt))
    if not (wants_letter and letters and text):
        return text
    return extract_mcq_answer(text, choices=letters) or text

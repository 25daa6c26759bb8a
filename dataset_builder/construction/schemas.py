"""JSON schemas of every stage's model output, a validator for the subset of JSON Schema they use, and the
extraction of a JSON object from a model's text (code fences and chatter around it are tolerated).

The subset: `type` (object, array, string, integer, number, boolean), `properties`, `required`,
`additionalProperties` (ignored: extra keys are allowed), `items`, `minItems`, `maxItems`, `minLength`, `enum`.
"""

from __future__ import annotations

import json
import re

ASPECTS = ("temporality", "spatiality", "object", "action", "scene", "summary")
TEXT = {"type": "string", "minLength": 1}

CLIP_CAPTION = {
    "type": "object",
    "properties": {aspect: TEXT for aspect in ASPECTS},
    "required": ["summary"],
}
EVENT_SPLIT = {
    "type": "object",
    "properties": {
        "events": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"start_clip": {"type": "integer"}, "end_clip": {"type": "integer"}},
                "required": ["start_clip", "end_clip"],
            },
        }
    },
    "required": ["events"],
}
EVENT_CAPTION = {"type": "object", "properties": {"caption": TEXT}, "required": ["caption"]}
GLOBAL_CAPTION = {"type": "object", "properties": {"caption": TEXT}, "required": ["caption"]}


def qa_schema(tasks: list[str], multiple_choice: bool, max_options: int = 8) -> dict:
    """{"qa": [{"task", "question"(, "options"), "answer"}, ...]} for the given tasks, with 2 to `max_options`
    options (before the answer: the order a schema-guided decoder writes them in)."""
    properties = {"task": {"type": "string", "enum": list(tasks)}, "question": TEXT}
    if multiple_choice:
        properties["options"] = {"type": "array", "minItems": 2, "maxItems": max_options, "items": TEXT}
    item = {"type": "object", "properties": properties | {"answer": TEXT}, "required": list(properties) + ["answer"]}
    return {"type": "object", "properties": {"qa": {"type": "array", "minItems": 1, "items": item}}, "required": ["qa"]}


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


class OutputError(ValueError):
    """A model output that is not JSON, does not match its schema, or fails a stage's own checks; `reason` is a
    short stable name for counting ("schema", "not_json", "timestamp", ...)."""

    def __init__(self, message: str, reason: str = "schema"):
        super().__init__(message)
        self.reason = reason


def validate(value, schema: dict, path: str = "$") -> None:
    """Raise OutputError naming the first place where `value` breaks `schema`."""
    expected = schema.get("type")
    if expected:
        python_type = _TYPES[expected]
        if not isinstance(value, python_type) or (expected in ("integer", "number") and isinstance(value, bool)):
            raise OutputError(f"{path}: expected {expected}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise OutputError(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str) and len(value.strip()) < schema.get("minLength", 0):
        raise OutputError(f"{path}: string shorter than {schema['minLength']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            raise OutputError(f"{path}: {len(value)} items, outside [{schema.get('minItems', 0)}, maxItems]")
        for index, item in enumerate(value):
            validate(item, schema.get("items", {}), f"{path}[{index}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise OutputError(f"{path}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, f"{path}.{key}")


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str):
    """The first JSON object in a model's text: a fenced block, else from the first `{` to its matching `}`."""
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1)] if fenced else []
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start:])
    decoder = json.JSONDecoder()
    for candidate in candidates:
        candidate = candidate.strip()
        try:
            value, _ = decoder.raw_decode(candidate[candidate.find("{") :] if "{" in candidate else candidate)
            return value
        except json.JSONDecodeError:
            continue
    raise OutputError(f"no JSON object in the output: {text[:200]!r}", "not_json")


def parse(text: str, schema: dict):
    """extract_json + validate."""
    value = extract_json(text)
    validate(value, schema)
    return value

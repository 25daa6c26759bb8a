"""Schema-guided decoding for weak local models: we write the JSON, the model fills in the values.

Small models (SmolLM2-135M) rarely write a whole JSON object that validates: they forget keys, quote wrongly, or
chat. `SchemaFiller` walks the stage's JSON schema and writes every structural token itself (braces, keys, quotes,
commas), feeding them to the model as a continuation of its own answer, and lets the model choose only:

- string contents: greedy (or sampled) tokens until the model closes the string or ends a sentence (with
  `stop_at_sentence_end`: weak models rarely close strings and ramble on), with tokens that would break the JSON
  (backslashes, control characters, newlines) masked out, at least `min_string_tokens` and at most
  `max_string_tokens` per string, and the strings of one array starting with different tokens;
- `enum` values, booleans, and for arrays whether to add another item (up to `maxItems`, else `max_items`): the
  allowed continuation the model scores highest, token by token over the options' tokenizations;
- integers: digit tokens, up to `max_digits`;
- an "answer" string that follows an "options" array in the same object: one of the options' letters.

The prompt and every fed token stay in one KV cache, so the prompt is encoded once per answer. Every object lists
all its schema properties in schema order. The result always parses; the stages still validate it (a string
may be empty when the budget ran out, a choice may be wrong for the stage's own checks).
"""

from __future__ import annotations

import json
import string

import torch

LETTERS = string.ascii_uppercase
SENTENCE_ENDS = (".", "!", "?")


class SchemaFiller:
    """Fill a JSON schema with one causal LM; `fill(encoded, schema, max_new_tokens) -> (json text, new tokens)`.

    `encoded`: the chat-template encoding of one prompt with the generation prompt (input_ids (1, L), attention
    mask, plus any extra model inputs such as pixel values, passed to the first forward only)."""

    def __init__(
        self,
        model,
        tokenizer,
        temperature: float = 0.0,
        seed: int = 0,
        max_string_tokens: int = 48,
        max_items: int = 8,
        max_digits: int = 3,
        stop_at_sentence_end: bool = True,
        min_string_tokens: int = 3,
    ):
        self.stop_at_sentence_end, self.min_string_tokens = stop_at_sentence_end, min_string_tokens
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.seed = temperature, seed
        self.max_string_tokens, self.max_items, self.max_digits = max_string_tokens, max_items, max_digits
        self._tables = _token_tables(tokenizer, model.get_output_embeddings().weight.shape[0])

    # -- decoding state -----------------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, extra: dict | None = None) -> None:
        """Feed token ids (1, n) after what was fed so far; keeps the cache and the next-token log-probabilities."""
        mask = torch.ones((1, self._length + ids.shape[1]), dtype=torch.long)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, past_key_values=self._cache, use_cache=True, **(extra or {})
            )
        self._cache, self._length = out.past_key_values, self._length + ids.shape[1]
        self._logits = out.logits[0, -1].float()

    def _emit(self, text: str) -> None:
        """Write skeleton text: into the answer and into the model's context."""
        self._text.append(text)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if ids.shape[1]:
            self._forward(ids)

    def _pick(self, allowed: torch.Tensor) -> int:
        """The next token among `allowed` (bool over the vocabulary): greedy, or sampled at the temperature."""
        logits = self._logits.masked_fill(~allowed, float("-inf"))
        if self.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def _take(self, token: int) -> str:
        """Feed one chosen token; its text."""
        self._new_tokens += 1
        self._forward(torch.tensor([[token]]))
        return self._tables.texts[token]

    # -- schema walk -----------------------------------------------------------------------------------------------
    def fill(self, encoded: dict, schema: dict, max_new_tokens: int) -> tuple[str, int]:
        """The JSON text of a value of `schema` and how many tokens the model chose."""
        self._cache, self._length, self._text, self._new_tokens = None, 0, [], 0
        self._first_tokens: set[int] = set()
        self._budget = max_new_tokens
        self._generator = torch.Generator().manual_seed(self.seed)
        ids = encoded["input_ids"][:, encoded["attention_mask"][0].bool()]
        extra = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
        self._forward(ids, extra)
        self._value(schema, {})
        return "".join(self._text), self._new_tokens

    def _value(self, schema: dict, siblings: dict) -> object:
        kind = schema.get("type")
        if "enum" in schema:
            return json.loads(self._choose([json.dumps(v, ensure_ascii=False) for v in schema["enum"]]))
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema)
        if kind == "boolean":
            return self._choose(["true", "false"]) == "true"
        if kind in ("integer", "number"):
            return self._integer()
        if "options" in siblings and isinstance(siblings["options"], list) and siblings["options"]:
            return json.loads(self._choose([json.dumps(LETTERS[i]) for i in range(len(siblings["options"]))]))
        return self._string(schema.get("minLength", 0), "_in_array" in siblings)

    def _object(self, schema: dict) -> dict:
        values: dict = {}
        self._emit("{")
        for index, (key, sub) in enumerate(schema.get("properties", {}).items()):
            self._emit(("" if index == 0 else ", ") + json.dumps(key) + ": ")
            values[key] = self._value(sub, values)
        self._emit("}")
        return values

    def _array(self, schema: dict) -> list:
        """At least max(1, minItems) items; then the model chooses "]" or "," (up to maxItems, else `max_items`)."""
        lowest, highest = max(1, schema.get("minItems", 0)), schema.get("maxItems", self.max_items)
        items: list = []
        outer, self._first_tokens = self._first_tokens, set()  # an array's strings start differently: distinct options
        try:
            return self._items(schema, items, lowest, highest)
        finally:
            self._first_tokens = outer

    def _items(self, schema: dict, items: list, lowest: int, highest: int) -> list:
        self._emit("[")
        while True:
            items.append(self._value(schema.get("items", {}), {"_in_array": True}))
            if len(items) >= highest or (len(items) >= lowest and self._budget - self._new_tokens < 8):
                self._emit("]")
                return items
            if len(items) >= lowest:
                if self._choose(["]", ","]) == "]":
                    return items
            else:
                self._emit(",")
            self._emit(" ")

    def _choose(self, options: list[str]) -> str:
        """The option the model prefers, token by token over the options' tokenizations; writes it."""
        encoded = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        alive = list(range(len(options)))
        position = 0
        while True:
            done = [i for i in alive if len(encoded[i]) == position]
            if done and (len(done) == len(alive) or position > 0):
                chosen = done[0]
                break
            candidates = [i for i in alive if len(encoded[i]) > position]
            allowed = torch.zeros_like(self._logits, dtype=torch.bool)
            allowed[[encoded[i][position] for i in candidates]] = True
            token = self._pick(allowed)
            alive = [i for i in candidates if encoded[i][position] == token]
            self._new_tokens += 1
            self._forward(torch.tensor([[token]]))
            position += 1
        self._text.append(options[chosen])
        return options[chosen]

    def _string(self, min_length: int, distinct: bool = False) -> str:
        """A JSON string whose contents the model writes until it closes the quote (or its token budget ends);
        `distinct`: its first token differs from those of the array's earlier strings."""
        self._emit('"')
        taken: list[str] = []
        before_quote = ""
        tables = self._tables
        for _ in range(min(self.max_string_tokens, max(1, self._budget - self._new_tokens))):
            allowed = tables.content | tables.closing if len(taken) >= self.min_string_tokens else tables.content
            if min_length and not "".join(taken).strip():
                allowed = tables.content & ~tables.blank  # something visible first
            if distinct and not taken:
                allowed = allowed.clone()
                allowed[list(self._first_tokens)] = False
            token = self._pick(allowed)
            if distinct and not taken:
                self._first_tokens.add(token)
            if tables.closing[token]:  # a token with a quote ends the string; what precedes the quote is kept
                before_quote = tables.texts[token].split('"', 1)[0]
                break
            taken.append(self._take(token))
            ended = taken[-1].rstrip().endswith(SENTENCE_ENDS) and len(taken) >= self.min_string_tokens
            if self.stop_at_sentence_end and ended:
                break
        self._text.append("".join(taken))
        self._emit(before_quote + '"')
        return "".join(taken) + before_quote

    def _integer(self) -> int:
        """Digit tokens: the first is forced, more while the model's favourite next token is a digit."""
        digits = ""
        while len(digits) < self.max_digits:
            if digits and int(self._logits.argmax()) not in self._tables.digit_ids:
                break
            digits += self._take(self._pick(self._tables.digits))
        self._text.append(digits)
        return int(digits)


class _Tables:
    """Per-token facts over the vocabulary: text, allowed inside a string, closes a string, blank, digits."""

    def __init__(self, texts: list[str], size: int):
        self.texts = texts + [""] * (size - len(texts))
        self.content = torch.zeros(size, dtype=torch.bool)
        self.closing = torch.zeros(size, dtype=torch.bool)
        self.blank = torch.zeros(size, dtype=torch.bool)
        self.digits = torch.zeros(size, dtype=torch.bool)
        for token, text in enumerate(texts):
            if not text or "\\" in text or any(ord(c) < 32 for c in text) or "\ufffd" in text:
                continue
            if '"' in text:
                self.closing[token] = True
                continue
            self.content[token] = True
            self.blank[token] = not text.strip()
            self.digits[token] = text.isdigit() and text.isascii()
        self.digit_ids = set(torch.nonzero(self.digits).flatten().tolist())


_TABLES: dict[tuple[int, int], _Tables] = {}


def _token_tables(tokenizer, size: int) -> _Tables:
    """Built once per tokenizer (decoding a 50k vocabulary takes a second)."""
    key = (id(tokenizer), size)
    if key not in _TABLES:
        special = set(tokenizer.all_special_ids)
        texts = [
            "" if token in special else tokenizer.decode([token], clean_up_tokenization_spaces=False)
            for token in range(len(tokenizer))
        ]
        _TABLES[key] = _Tables(texts, size)
    return _TABLES[key]

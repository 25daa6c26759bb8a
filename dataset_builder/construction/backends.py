"""Text-generation backends behind one small interface, with a disk cache and a cost counter.

    backend = TransformersBackend("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir="cache/llm")
    backend = OpenAIBackend("http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct", cache_dir="cache/llm")
    completions = backend.generate(["prompt", ...], max_new_tokens=256, temperature=0.0, json_schema=schema)

Every backend answers `generate(prompts, max_new_tokens, temperature, json_schema=None, attempt=0, images=None)`
with one `Completion` per prompt, in order. `images` (vision backends: `TransformersVLMBackend`, `OpenAIBackend`)
gives each prompt its frames, (H, W, 3) uint8 arrays shown before the text. A completion is cached on disk under a
key of (backend id, model, prompt, digest of its images, parameters, attempt), written atomically, so rerunning a
pipeline costs nothing; `attempt` is part of the key so a retry after a malformed answer asks the model again
instead of reading the same answer back. `backend.cost` counts calls, cache hits, images sent, prompt and
completion tokens and seconds.

A prompt longer than the model's context raises `ContextOverflowError` (a `BackendError`) naming the lengths, before
anything is generated (transformers) or from the server's HTTP 400 (OpenAI-compatible): rerunning does not help.

Transport failures (timeouts, refused connections, HTTP 429 and 5xx) are retried with exponential backoff; when
the retries are spent, `BackendError` is raised and the caller decides (the pipeline stops that video, keeps its
finished stages and moves on).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..media import write_json_atomically

RETRY_HTTP_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# How vLLM, SGLang, llama.cpp and hosted APIs word a prompt that is too long (in an HTTP 400 body).
CONTEXT_OVERFLOW = re.compile(r"context[ _]length|context window|maximum context|too many tokens|too long", re.I)
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}


Frames = list  # one prompt's images: (H, W, 3) uint8 numpy arrays


class BackendError(RuntimeError):
    """A backend could not answer (retries spent, server gone, bad request). `partial` holds, per prompt of the
    failed batch, the completions that did arrive (None for the others): `generate` caches them before raising,
    so a resumed run does not pay for them again."""

    def __init__(self, message: str, partial: list[Completion | None] | None = None):
        super().__init__(message)
        self.partial = partial or []


class ContextOverflowError(BackendError):
    """A prompt that does not fit the model's context window (prompt tokens + max_new_tokens > the limit)."""


@dataclass
class Completion:
    """One generated answer and what it cost (a cache hit costs no tokens or seconds)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    images: int = 0


@dataclass
class Cost:
    """Running totals: model calls (prompts sent), cache hits, tokens and seconds. Thread-safe `add`."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    transport_retries: int = 0
    images: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion) -> None:
        with self._lock:
            if completion.cached:
                self.cache_hits += 1
                return
            self.calls += 1
            self.images += completion.images
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
            self.seconds += completion.seconds

    def count_retry(self) -> None:
        with self._lock:
            self.transport_retries += 1

    def as_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        return values | {"seconds": round(self.seconds, 3)}


class DiskCache:
    """Completions as JSON files `root/ab/abcdef....json`, written atomically; `root=None` disables caching."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = os.fspath(root) if root is not None else None

    @staticmethod
    def key(**fields) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> Completion | None:
        if self.root is None or not os.path.isfile(self._path(key)):
            return None
        try:
            with open(self._path(key)) as handle:
                data = json.load(handle)
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is regenerated
        known = {f.name for f in fields(Completion)}
        return Completion(**{**{k: v for k, v in data.items() if k in known}, "cached": True})

    def put(self, key: str, completion: Completion) -> None:
        if self.root is not None:
            write_json_atomically(self._path(key), asdict(completion) | {"cached": False})


def frames_digest(frames: Frames | None) -> list[str]:
    """A short content hash per image (shape and bytes), for cache keys."""
    digests = []
    for frame in frames or []:
        array = np.ascontiguousarray(frame)
        digests.append(hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()[:24])
    return digests


class Backend:
    """The interface: `generate` (cached, counted) around `_generate_uncached`, which subclasses implement (with an
    `images` keyword when they read images). `cache_tag` adds what else changes the answers to the cache key."""

    backend_id = "base"
    cache_tag: dict = {}

    def __init__(self, model: str, cache_dir: str | os.PathLike | None = None):
        self.model = model
        self.cache = DiskCache(cache_dir)
        self.cost = Cost()

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        temperature: float = 0.0,
        json_schema: dict | list[dict | None] | None = None,
        attempt: int = 0,
        images: list[Frames | None] | None = None,
    ) -> list[Completion]:
        """One completion per prompt; cached ones are read from disk, the others generated and stored.
        `json_schema`: one schema for every prompt, or a list with each prompt's own."""
        if images is not None and len(images) != len(prompts):
            raise ValueError(f"{self.backend_id}: {len(images)} image lists for {len(prompts)} prompts")
        own_schemas = isinstance(json_schema, list)
        if own_schemas and len(json_schema) != len(prompts):
            raise ValueError(f"{self.backend_id}: {len(json_schema)} schemas for {len(prompts)} prompts")
        keys = []
        for index, prompt in enumerate(prompts):
            schema = json_schema[index] if own_schemas else json_schema
            params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "json_schema": schema}
            fields_ = {"backend": self.backend_id, "model": self.model, "prompt": prompt}
            if images is not None:  # text-only keys stay as they were, so old caches keep answering
                fields_["images"] = frames_digest(images[index])
            keys.append(DiskCache.key(**fields_, params=params | self.cache_tag, attempt=attempt))
        results: list[Completion | None] = [self.cache.get(key) for key in keys]
        missing = [index for index, result in enumerate(results) if result is None]
        if missing:
            todo = [prompts[i] for i in missing]
            extra = {} if images is None else {"images": [images[i] for i in missing]}
            schemas = [json_schema[i] for i in missing] if own_schemas else json_schema
            try:
                fresh = self._generate_uncached(todo, max_new_tokens, temperature, schemas, **extra)
            except BackendError as error:
                for index, completion in zip(missing, error.partial, strict=False):
                    if completion is not None:
                        self.cache.put(keys[index], completion)
                        self.cost.add(completion)
                raise
            if len(fresh) != len(missing):
                raise BackendError(f"{self.backend_id}: {len(fresh)} completions for {len(missing)} prompts")
            for index, completion in zip(missing, fresh, strict=True):
                self.cache.put(keys[index], completion)
                results[index] = completion
        for result in results:
            self.cost.add(result)
        return results  # type: ignore[return-value]

    def _generate_uncached(
        self, prompts: list[str], max_new_tokens: int, temperature: float, json_schema: dict | list | None
    ) -> list[Completion]:
        """Completions of prompts that are not cached; `json_schema` as `generate` got it (dict, list or None)."""
        raise NotImplementedError


def schema_of(json_schema: dict | list | None, index: int) -> dict | None:
    """The schema of prompt `index` from one shared schema or a per-prompt list."""
    return json_schema[index] if isinstance(json_schema, list) else json_schema


# ---------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------
class TransformersBackend(Backend):
    """A local causal LM through transformers: prompts as single user turns of the chat template, left-padded
    batches of `batch_size`, greedy at temperature 0. `json_schema` is not enforced unless `constrained=True`
    (then `constrained.SchemaFiller` writes the JSON skeleton and the model fills only strings, numbers and choices,
    one prompt at a time: what makes weak models usable; `filler_options` go to it); otherwise the stages validate
    and retry. Pass a loaded
    `model_obj`/`tokenizer` to share one model between backends. `context_length` overrides the model's window
    (default: its config's `max_position_embeddings`)."""

    backend_id = "transformers"

    def __init__(
        self,
        model: str,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 8,
        model_obj=None,
        tokenizer=None,
        load_kwargs: dict | None = None,
        seed: int = 0,
        constrained: bool = False,
        context_length: int | None = None,
        filler_options: dict | None = None,
    ):
        super().__init__(model, cache_dir)
        self.filler_options = dict(filler_options or {})
        self.batch_size = batch_size
        self.seed = seed
        self.constrained = constrained
        self.context_length = context_length
        self._model, self._tokenizer = model_obj, tokenizer
        self._load_kwargs = load_kwargs or {}
        self._lock = threading.Lock()  # one generate at a time: the model is shared by the pipeline's threads

    @property
    def cache_tag(self) -> dict:
        return {"constrained": self.filler_options or True} if self.constrained else {}

    def loaded(self):
        """(model, tokenizer), loading them on first use."""
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = self._tokenizer or AutoTokenizer.from_pretrained(self.model, **self._load_kwargs)
            self._model = AutoModelForCausalLM.from_pretrained(self.model, **self._load_kwargs).eval()
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._model, self._tokenizer

    def max_context(self) -> int | None:
        """Tokens the model attends to (prompt + generated), or None when unknown."""
        if self.context_length:
            return self.context_length
        config = self.loaded()[0].config
        config = getattr(config, "text_config", None) or config
        return getattr(config, "max_position_embeddings", None)

    def _generate_uncached(
        self,
        prompts: list[str],
        max_new_tokens: int,
        temperature: float,
        json_schema: dict | list | None,
        images: list[Frames | None] | None = None,
    ) -> list[Completion]:
        with self._lock:
            out: list[Completion] = []
            if self.constrained and json_schema is not None:
                from .constrained import SchemaFiller

                model, tokenizer = self.loaded()
                filler = SchemaFiller(model, tokenizer, temperature, self.seed, **self.filler_options)
                for index, prompt in enumerate(prompts):
                    encoded = self._encode([prompt], None if images is None else [images[index]])
                    self._check_context(encoded, max_new_tokens)
                    started = time.perf_counter()
                    text, new_tokens = filler.fill(encoded, schema_of(json_schema, index), max_new_tokens)
                    seconds = time.perf_counter() - started
                    count = len(images[index] or []) if images else 0
                    prompt_tokens = int(encoded["attention_mask"].sum())
                    out.append(Completion(text, prompt_tokens, new_tokens, seconds, images=count))
                return out
            for start in range(0, len(prompts), self.batch_size):
                batch_images = None if images is None else images[start : start + self.batch_size]
                out.extend(
                    self._batch(prompts[start : start + self.batch_size], max_new_tokens, temperature, batch_images)
                )
            return out

    def _encode(self, prompts: list[str], images: list[Frames | None] | None) -> dict:
        """Token ids (left-padded) of the prompts as user turns; text only here."""
        if images is not None and any(images):
            raise ValueError(f"{self.model}: a text-only backend got images; use TransformersVLMBackend")
        tokenizer = self.loaded()[1]
        messages = [[{"role": "user", "content": prompt}] for prompt in prompts]
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
        )

    def _check_context(self, encoded: dict, max_new_tokens: int) -> None:
        """ContextOverflowError when the longest prompt plus max_new_tokens exceeds the model's window."""
        limit = self.max_context()
        longest = int(encoded["attention_mask"].sum(dim=1).max())
        if limit and longest + max_new_tokens > limit:
            raise ContextOverflowError(
                f"{self.model}: a prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model's "
                f"context of {limit} tokens; use shorter clips (--clip-seconds), fewer frames per clip, or a model "
                "with a longer context"
            )

    def _batch(
        self, prompts: list[str], max_new_tokens: int, temperature: float, images: list[Frames | None] | None = None
    ) -> list[Completion]:
        import torch

        model, tokenizer = self.loaded()
        encoded = self._encode(prompts, images)
        self._check_context(encoded, max_new_tokens)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        started = time.perf_counter()
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        seconds = (time.perf_counter() - started) / len(prompts)
        width = encoded["input_ids"].shape[1]
        counts = [len(frames or []) for frames in images] if images else [0] * len(prompts)
        completions = []
        for row, mask, count in zip(output, encoded["attention_mask"], counts, strict=True):
            new = row[width:]
            new_tokens = int((new != tokenizer.pad_token_id).sum())
            text = tokenizer.decode(new, skip_special_tokens=True)
            completions.append(Completion(text, int(mask.sum()), new_tokens, seconds, images=count))
        return completions


class TransformersVLMBackend(TransformersBackend):
    """A local vision-language model through transformers (`AutoProcessor` + `AutoModelForImageTextToText`: Qwen2-VL,
    LLaVA-OneVision, Hour-LLaVA, ...): each prompt is one user turn with its frames as image parts before the text,
    batched and left-padded by the processor's chat template. Text-only prompts work too. `load_kwargs` go to both
    `from_pretrained` calls (e.g. `{"trust_remote_code": True, "torch_dtype": "bfloat16"}`). `processor_obj` /
    `model_obj` share loaded ones."""

    backend_id = "transformers-vlm"

    def __init__(self, model: str, cache_dir: str | os.PathLike | None = None, processor_obj=None, **kwargs):
        super().__init__(model, cache_dir, **kwargs)
        self._processor = processor_obj
        if processor_obj is not None:
            self._tokenizer = processor_obj.tokenizer

    def loaded(self):
        """(model, tokenizer), loading the processor and model on first use."""
        if self._processor is None:
            from transformers import AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.model, **self._load_kwargs)
            self._tokenizer = self._processor.tokenizer
        if self._model is None:
            from transformers import AutoModelForImageTextToText

            self._model = AutoModelForImageTextToText.from_pretrained(self.model, **self._load_kwargs).eval()
        return super().loaded()

    @property
    def processor(self):
        self.loaded()
        return self._processor

    def _encode(self, prompts: list[str], images: list[Frames | None] | None) -> dict:
        """Processor inputs (ids, mask, pixel values, ...) for user turns of frames (as RGB images) then text."""
        from PIL import Image

        self.loaded()
        messages = []
        for index, prompt in enumerate(prompts):
            frames = (images[index] if images is not None else None) or []
            parts = [{"type": "image", "image": Image.fromarray(np.asarray(frame, np.uint8))} for frame in frames]
            messages.append([{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}])
        return self._processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )


# ---------------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP
# ---------------------------------------------------------------------------------------------------------------
def image_data_url(frame, image_format: str = "jpeg") -> str:
    """A `data:image/...;base64,` URL of an (H, W, 3) uint8 frame (JPEG quality 90, or lossless PNG)."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": 90} if image_format == "jpeg" else {}
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format=image_format.upper(), **options)
    return f"data:{IMAGE_FORMATS[image_format]};base64,{base64.b64encode(buffer.getvalue()).decode()}"


class RateLimiter:
    """At most `per_second` request starts per second (None: unlimited), shared by the backend's threads."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


class OpenAIBackend(Backend):
    """`POST {base_url}/chat/completions` (vLLM, SGLang, hosted APIs): `concurrency` requests in flight, at most
    `requests_per_second`, `timeout` seconds each, `max_retries` retries with backoff `backoff * 2**k` on transport
    errors, 408/409/425/429 and 5xx. `json_schema` is sent as `response_format` when `structured_output` is True
    (servers that support it then constrain decoding). Images go as base64 `image_url` content parts before the text
    (`image_format` "jpeg" or "png"). The API key comes from `api_key` or `$OPENAI_API_KEY`."""

    backend_id = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | os.PathLike | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        requests_per_second: float | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        structured_output: bool = True,
        image_format: str = "jpeg",
    ):
        super().__init__(model, cache_dir)
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format {image_format!r}; expected one of {sorted(IMAGE_FORMATS)}")
        self.image_format = image_format
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.concurrency = max(1, concurrency)
        self.rate = RateLimiter(requests_per_second)
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.structured_output = structured_output

    def _generate_uncached(
        self,
        prompts: list[str],
        max_new_tokens: int,
        temperature: float,
        json_schema: dict | list | None,
        images: list[Frames | None] | None = None,
    ) -> list[Completion]:
        frames = images if images is not None else [None] * len(prompts)
        call = lambda i: self._complete(prompts[i], max_new_tokens, temperature, schema_of(json_schema, i), frames[i])
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            futures = [pool.submit(call, index) for index in range(len(prompts))]
        errors = [future.exception() for future in futures if future.exception() is not None]
        overflow = [error for error in errors if isinstance(error, ContextOverflowError)]
        if errors:
            partial = [None if future.exception() else future.result() for future in futures]
            kind = ContextOverflowError if overflow else BackendError
            first = (overflow or errors)[0]
            raise kind(f"{len(errors)} of {len(prompts)} requests failed; first: {first}", partial)
        return [future.result() for future in futures]

    def _content(self, prompt: str, frames: Frames | None) -> str | list[dict]:
        """The user message's content: the prompt, or image parts (base64 data URLs) followed by the prompt."""
        if not frames:
            return prompt
        parts = [{"type": "image_url", "image_url": {"url": image_data_url(f, self.image_format)}} for f in frames]
        return [*parts, {"type": "text", "text": prompt}]

    def _body(
        self, prompt: str, max_new_tokens: int, temperature: float, json_schema: dict | None, frames: Frames | None
    ) -> bytes:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self._content(prompt, frames)}],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if json_schema is not None and self.structured_output:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": json_schema}}
        return json.dumps(body).encode()

    def _complete(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        json_schema: dict | None,
        frames: Frames | None = None,
    ) -> Completion:
        body = self._body(prompt, max_new_tokens, temperature, json_schema, frames)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.cost.count_retry()
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.rate.wait()
            started = time.perf_counter()
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read())
                completion = self._completion(payload, time.perf_counter() - started)
                completion.images = len(frames or [])
                return completion
            except urllib.error.HTTPError as error:
                detail = error.read()[:300]
                last_error = f"HTTP {error.code}: {detail!r}"
                if error.code == 400 and CONTEXT_OVERFLOW.search(detail.decode(errors="replace")):
                    raise ContextOverflowError(
                        f"{self.url}: the prompt does not fit the model's context ({last_error}); use shorter clips "
                        "(--clip-seconds), fewer frames per clip, or a model with a longer context"
                    ) from error
                if error.code not in RETRY_HTTP_STATUS:
                    raise BackendError(f"{self.url}: {last_error}") from error
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                last_error = f"{type(error).__name__}: {error}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
                last_error = f"unreadable response: {type(error).__name__}: {error}"
        raise BackendError(f"{self.url}: no answer after {self.max_retries + 1} tries; last error {last_error}")

    @staticmethod
    def _completion(payload: dict, seconds: float) -> Completion:
        usage = payload.get("usage") or {}
        return Completion(
            text=payload["choices"][0]["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=seconds,
        )

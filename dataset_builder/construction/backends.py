"""Text-generation backends behind one small interface, with a disk cache and a cost counter.

    backend = TransformersBackend("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir="cache/llm")
    backend = OpenAIBackend("http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct", cache_dir="cache/llm")
    completions = backend.generate(["prompt", ...], max_new_tokens=256, temperature=0.0, json_schema=schema)

Every backend answers `generate(prompts, max_new_tokens, temperature, json_schema=None, attempt=0)` with one
`Completion` per prompt, in order. A completion is cached on disk under a key of (backend id, model, prompt,
parameters, attempt), written atomically, so rerunning a pipeline costs nothing; `attempt` is part of the key so a
retry after a malformed answer asks the model again instead of reading the same answer back. `backend.cost`
counts calls, cache hits, prompt and completion tokens and seconds.

Transport failures (timeouts, refused connections, HTTP 429 and 5xx) are retried with exponential backoff; when
the retries are spent, `BackendError` is raised and the caller decides (the pipeline stops that video, keeps its
finished stages and moves on).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields

from ..media import write_json_atomically

RETRY_HTTP_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class BackendError(RuntimeError):
    """A backend could not answer (retries spent, server gone, bad request). `partial` holds, per prompt of the
    failed batch, the completions that did arrive (None for the others): `generate` caches them before raising,
    so a resumed run does not pay for them again."""

    def __init__(self, message: str, partial: list[Completion | None] | None = None):
        super().__init__(message)
        self.partial = partial or []


@dataclass
class Completion:
    """One generated answer and what it cost (a cache hit costs no tokens or seconds)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False


@dataclass
class Cost:
    """Running totals: model calls (prompts sent), cache hits, tokens and seconds. Thread-safe `add`."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    transport_retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion) -> None:
        with self._lock:
            if completion.cached:
                self.cache_hits += 1
                return
            self.calls += 1
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
        return Completion(**{**data, "cached": True})

    def put(self, key: str, completion: Completion) -> None:
        if self.root is not None:
            write_json_atomically(self._path(key), asdict(completion) | {"cached": False})


class Backend:
    """The interface: `generate` (cached, counted) around `_generate_uncached`, which subclasses implement."""

    backend_id = "base"

    def __init__(self, model: str, cache_dir: str | os.PathLike | None = None):
        self.model = model
        self.cache = DiskCache(cache_dir)
        self.cost = Cost()

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        temperature: float = 0.0,
        json_schema: dict | None = None,
        attempt: int = 0,
    ) -> list[Completion]:
        """One completion per prompt; cached ones are read from disk, the others generated and stored."""
        params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "json_schema": json_schema}
        keys = [
            DiskCache.key(backend=self.backend_id, model=self.model, prompt=p, params=params, attempt=attempt)
            for p in prompts
        ]
        results: list[Completion | None] = [self.cache.get(key) for key in keys]
        missing = [index for index, result in enumerate(results) if result is None]
        if missing:
            try:
                fresh = self._generate_uncached([prompts[i] for i in missing], max_new_tokens, temperature, json_schema)
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
        self, prompts: list[str], max_new_tokens: int, temperature: float, json_schema: dict | None
    ) -> list[Completion]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------
class TransformersBackend(Backend):
    """A local causal LM through transformers: prompts as single user turns of the chat template, left-padded
    batches of `batch_size`, greedy at temperature 0. `json_schema` is not enforced (no constrained decoding);
    the stages validate and retry. Pass a loaded `model_obj`/`tokenizer` to share one model between backends."""

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
    ):
        super().__init__(model, cache_dir)
        self.batch_size = batch_size
        self.seed = seed
        self._model, self._tokenizer = model_obj, tokenizer
        self._load_kwargs = load_kwargs or {}
        self._lock = threading.Lock()  # one generate at a time: the model is shared by the pipeline's threads

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

    def _generate_uncached(
        self, prompts: list[str], max_new_tokens: int, temperature: float, json_schema: dict | None
    ) -> list[Completion]:
        with self._lock:
            out: list[Completion] = []
            for start in range(0, len(prompts), self.batch_size):
                out.extend(self._batch(prompts[start : start + self.batch_size], max_new_tokens, temperature))
            return out

    def _batch(self, prompts: list[str], max_new_tokens: int, temperature: float) -> list[Completion]:
        import torch

        model, tokenizer = self.loaded()
        messages = [[{"role": "user", "content": prompt}] for prompt in prompts]
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
        )
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        started = time.perf_counter()
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        seconds = (time.perf_counter() - started) / len(prompts)
        width = encoded["input_ids"].shape[1]
        completions = []
        for row, mask in zip(output, encoded["attention_mask"], strict=True):
            new = row[width:]
            new_tokens = int((new != tokenizer.pad_token_id).sum())
            text = tokenizer.decode(new, skip_special_tokens=True)
            completions.append(Completion(text, int(mask.sum()), new_tokens, seconds))
        return completions


# ---------------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP
# ---------------------------------------------------------------------------------------------------------------
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
    (servers that support it then constrain decoding). The API key comes from `api_key` or `$OPENAI_API_KEY`."""

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
    ):
        super().__init__(model, cache_dir)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.concurrency = max(1, concurrency)
        self.rate = RateLimiter(requests_per_second)
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.structured_output = structured_output

    def _generate_uncached(
        self, prompts: list[str], max_new_tokens: int, temperature: float, json_schema: dict | None
    ) -> list[Completion]:
        call = lambda prompt: self._complete(prompt, max_new_tokens, temperature, json_schema)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            futures = [pool.submit(call, prompt) for prompt in prompts]
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            partial = [None if future.exception() else future.result() for future in futures]
            raise BackendError(f"{len(errors)} of {len(prompts)} requests failed; first: {errors[0]}", partial)
        return [future.result() for future in futures]

    def _body(self, prompt: str, max_new_tokens: int, temperature: float, json_schema: dict | None) -> bytes:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if json_schema is not None and self.structured_output:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": json_schema}}
        return json.dumps(body).encode()

    def _complete(self, prompt: str, max_new_tokens: int, temperature: float, json_schema: dict | None) -> Completion:
        body = self._body(prompt, max_new_tokens, temperature, json_schema)
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
                return self._completion(payload, time.perf_counter() - started)
            except urllib.error.HTTPError as error:
                last_error = f"HTTP {error.code}: {error.read()[:300]!r}"
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

"""A small OpenAI-compatible client (urllib only): list models, chat, with latency and tokens/s."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered with an error; the message says which and why, `status`
    the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def base_url(endpoint: str) -> str:
    """`http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all mean the same API root."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _request(url: str, api_key: str | None, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return data
    except ValueError as exc:  # not JSON (a proxy's HTML page), or not an object
        raise EndpointError(f"{url}: the answer is not an OpenAI API object ({str(exc)[:200]})") from exc
    except http.client.HTTPException as exc:  # a connection cut mid-answer
        raise EndpointError(f"{url}: the answer was cut off ({type(exc).__name__})") from exc
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        # vLLM answers 401; ms-swift's server answers 400 "API key error".
        hint = " (pass the key with --api-key-env)" if exc.code == 401 or "api key" in detail.lower() else ""
        raise EndpointError(f"{url}: HTTP {exc.code}{hint}: {detail}", exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointError(f"{url}: cannot connect: {getattr(exc, 'reason', exc)}") from exc


EMPTY_THINK = re.compile(r"<think>\s*</think>\s*")


def visible(text: str, show_thinking: bool = False) -> str:
    """The answer as a person reads it: Qwen3's empty `<think></think>` block (thinking switched off) hidden."""
    return text if show_thinking else EMPTY_THINK.sub("", text)


def list_models(endpoint: str, api_key: str | None = None, timeout: float = 10) -> list[str]:
    data = _request(base_url(endpoint) + "/models", api_key, None, timeout)
    try:
        models = [str(m["id"]) for m in data.get("data", [])]
    except (KeyError, TypeError) as exc:
        raise EndpointError(f"{base_url(endpoint)}/models: not a model list ({exc!r})") from exc
    if not models:
        raise EndpointError(f"{base_url(endpoint)}/models: the endpoint lists no model")
    return models


@dataclass(frozen=True)
class Answer:
    model: str
    text: str
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None

    @property
    def tokens_per_second(self) -> float | None:
        if not self.completion_tokens or self.latency_s <= 0:
            return None
        return round(self.completion_tokens / self.latency_s, 2)

    def record(self) -> dict[str, Any]:
        return {
            "model": self.model, "response": self.text, "latency_s": round(self.latency_s, 3),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "tokens_per_second": self.tokens_per_second,
        }  # fmt: skip


def chat(
    endpoint: str,
    messages: list[dict[str, str]],
    *,
    model: str | None = None,
    api_key: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    timeout: float = 600,
    extra: dict[str, Any] | None = None,
) -> Answer:
    """One chat completion; the model defaults to the first one the endpoint lists. `extra`: more request
    fields (e.g. response_format)."""
    model = model or list_models(endpoint, api_key)[0]
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature, **(extra or {})}
    started = time.perf_counter()
    data = _request(base_url(endpoint) + "/chat/completions", api_key, body, timeout)
    latency = time.perf_counter() - started
    try:
        usage = data.get("usage") or {}
        text = data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EndpointError(f"{base_url(endpoint)}/chat/completions: not a chat completion ({exc!r})") from exc
    return Answer(model, text, latency, usage.get("prompt_tokens"), usage.get("completion_tokens"))

"""One client for OpenAI-compatible chat-completions endpoints: the teacher's and the judge's.

    endpoint = Endpoint("http://127.0.0.1:8000/v1", "qwen", api_key_env="JUDGE_KEY")
    replies = complete_all(endpoint, [ChatRequest.user("Which is better? ...")])
    texts = [r.text for r in replies]          # input order, whatever order the replies came in

The `openai` SDK sends each request and retries 429, 408/409 and 5xx answers and timeouts with
exponential backoff, honouring `Retry-After`. `concurrency` requests are in flight at once (a thread
pool over the batch). What survives the retries:

  * 400/401/403/404/422 (a wrong URL, model or key): `ConfigError` at once, the rest cancelled;
  * a rate limit, server error, timeout or refused connection: `EndpointError` (transient: the
    nightly run exits 75 so cron retries later, and nothing half-judged is stored);
  * an answer that is not a chat completion: a `Reply` with `failure` set (callers decide).

Conventions: `base_url=None` means `$OPENAI_BASE_URL`. The key comes from the environment variable
*named* `api_key_env`, else `$OPENAI_API_KEY` when set, else no Authorization header (local
servers). It is read at call time and never stored, logged or put in an error message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loop.core.errors import ConfigError, EndpointError

DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_RETRIES = 3  # the SDK's backoff: 0.5, 1, 2 s (or what Retry-After says, up to 2 min)
CONFIG_STATUSES = (400, 401, 403, 404, 422)  # the request is wrong, not the moment
BODY_KEPT = 200  # characters of a server's error text kept in a message


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send chat requests. `hint` tells the user which settings to check."""

    base_url: str | None  # None: $OPENAI_BASE_URL
    model: str
    api_key_env: str | None = None  # the NAME of the variable holding the key, never the key
    timeout_s: float = 60.0
    max_retries: int = DEFAULT_MAX_RETRIES
    concurrency: int = DEFAULT_CONCURRENCY
    hint: str = "check the base URL, the model name and the API key variable"

    @property
    def url(self) -> str:
        url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise ConfigError(f"No endpoint URL for model '{self.model}': give a base URL or set "
                              "OPENAI_BASE_URL.")
        return url.rstrip("/")

    @property
    def label(self) -> str:
        return f"{self.model}@{self.url}"


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content)
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None

    @staticmethod
    def user(prompt: str, system: str | None = None, **options) -> ChatRequest:
        messages = ((("system", system),) if system else ()) + (("user", prompt),)
        return ChatRequest(messages, **options)


@dataclass(frozen=True)
class Reply:
    text: str | None  # None when the answer was not a chat completion
    failure: str | None = None


def api_key(endpoint: Endpoint) -> str | None:
    """The key for this call (named variable, else $OPENAI_API_KEY, else none)."""
    if endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env)
        if not key:
            raise ConfigError(f"The environment variable {endpoint.api_key_env} (the API key for "
                              f"{endpoint.label}) is not set.")
        return key
    return os.environ.get("OPENAI_API_KEY") or None


def complete_all(endpoint: Endpoint, requests: Sequence[ChatRequest]) -> list[Reply]:
    """One reply per request, in input order; up to `endpoint.concurrency` in flight."""
    if not requests:
        return []
    import openai

    key = api_key(endpoint)
    client = openai.OpenAI(base_url=endpoint.url, api_key=key or "unused",
                           timeout=endpoint.timeout_s, max_retries=endpoint.max_retries)
    # no key: send no Authorization header at all (the SDK would otherwise insist on one)
    headers = None if key else {"Authorization": openai.omit}
    stop = threading.Event()  # set by the first request that fails for good: send no more

    def send(request: ChatRequest) -> Reply | None:
        if stop.is_set():
            return None
        try:
            return _one(client, endpoint, request, headers, key)
        except BaseException:
            stop.set()
            raise

    with client, ThreadPoolExecutor(max(1, min(endpoint.concurrency, len(requests)))) as pool:
        futures = [pool.submit(send, r) for r in requests]
        try:
            return [f.result() for f in futures]
        except BaseException:
            stop.set()  # Ctrl-C too
            raise


def _one(client, endpoint: Endpoint, request: ChatRequest, headers, key: str | None) -> Reply:
    import openai

    options = {"seed": request.seed} if request.seed is not None else {}
    try:
        response = client.chat.completions.create(
            model=endpoint.model, temperature=request.temperature, max_tokens=request.max_tokens,
            messages=[{"role": role, "content": content} for role, content in request.messages],
            extra_headers=headers, **options)
    except openai.APIStatusError as exc:
        raise _status_error(endpoint, exc.status_code, _server_text(exc, key)) from None
    except openai.APITimeoutError:
        raise EndpointError(f"The endpoint {endpoint.url} gave no answer within "
                            f"{endpoint.timeout_s:g} s for model '{endpoint.model}' "
                            f"({endpoint.max_retries + 1} attempts).") from None
    except openai.APIConnectionError as exc:
        raise EndpointError(f"Cannot reach the endpoint {endpoint.url} ({_cause(exc)}; "
                            f"{endpoint.max_retries + 1} attempts).") from None
    except openai.APIResponseValidationError:
        return Reply(None, "not a chat-completions response")
    try:
        return Reply(str(response.choices[0].message.content or ""))
    except (AttributeError, IndexError, KeyError, TypeError):
        return Reply(None, "not a chat-completions response")


def _status_error(endpoint: Endpoint, status: int, text: str) -> Exception:
    said = f" ({text})" if text else ""
    if status in CONFIG_STATUSES:
        return ConfigError(f"The endpoint {endpoint.url} answered HTTP {status} for model "
                           f"'{endpoint.model}'{said}; {endpoint.hint}.")
    what = "rate limit" if status == 429 else "error"
    return EndpointError(f"The endpoint {endpoint.url} answered HTTP {status} ({what}) for model "
                         f"'{endpoint.model}' on {endpoint.max_retries + 1} attempts{said}; "
                         "try again later, or lower the concurrency.")


def _server_text(exc, key: str | None) -> str:
    """The start of the server's error text, with the key blanked should a server echo it."""
    text = " ".join(str(getattr(exc, "message", "") or "").split())[:BODY_KEPT]
    return text.replace(key, "***") if key else text


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__

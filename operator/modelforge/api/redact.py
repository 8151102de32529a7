"""One redaction for every text copied from a pod into status conditions and Events.

Termination messages, the launcher's decisive lines and a container's last line can quote a credential
(a hub token in a URL, an `Authorization:` header in a traceback). What looks like one is replaced by
`[REDACTED]`; so is any value given in `secrets` (the values of the Secret env vars, where known).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[REDACTED]"

PATTERNS = (
    re.compile(r"(?i)(authorization\s*[:=]\s*)[^\r\n,;\"']+"),  # the whole header value, whatever its scheme
    # A scheme and a value with a digit and a letter in it: a credential has both; "token embeddings" and
    # "basic 2048-dim features" do not look like one.
    re.compile(
        r"(?i)\b(bearer|basic|token)(\s+)(?=[A-Za-z._~+/=-]*[0-9])(?=[0-9._~+/=-]*[A-Za-z])(?![0-9]+-)"
        r"[A-Za-z0-9._~+/=-]{8,}"
    ),
    # A URL's password (https://user:PASSWORD@host, redis://:PASSWORD@host).
    re.compile(r"(://[^/\s:@]*:)[^@\s/]+(?=@)"),
    # A key's value: api_key=..., "password": "...", {'api_key': '...'}, VLLM_API_KEY=..., --hub_token VALUE;
    # not None/null/true/false (ms-swift prints its unset arguments).
    re.compile(
        r"(?i)(?<![A-Za-z0-9])((?:api|access|secret|private)[-_]?key|password|passwd|secret"
        r"|(?:hub|hf|access|auth|api)[-_]?token)([\"']?\s*[:=]\s*[\"']?)"
        r"(?!(?:none|null|true|false)\b)[^\s\"',;&)}]{4,}"
    ),
    # A credential flag and its value in a command line: --hub_token VALUE, --api-key VALUE.
    re.compile(
        r"(?i)(--?(?:[a-z0-9]+[-_])*(?:(?:hub|hf|access|auth|api)[-_]?token|(?:api|access|secret|private)[-_]?key"
        r"|password|secret))(\s+)(?!-)(?!(?:none|null)\b)[^\s\"',;&)}]{4,}"
    ),
    re.compile(r"\bhf_[A-Za-z0-9]{8,}"),  # Hugging Face tokens
    re.compile(r"\bms-[0-9a-fA-F]{8}-[0-9a-fA-F-]{8,}"),  # ModelScope SDK tokens (a UUID after ms-)
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),  # OpenAI-style API keys
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials replaced by [REDACTED]; values shorter than 4 characters are not searched."""
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = PATTERNS[0].sub(lambda m: m.group(1) + MASK, text)
    text = PATTERNS[1].sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = PATTERNS[2].sub(lambda m: m.group(1) + MASK, text)
    for pattern in PATTERNS[3:5]:
        text = pattern.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    for pattern in PATTERNS[5:]:
        text = pattern.sub(MASK, text)
    return text

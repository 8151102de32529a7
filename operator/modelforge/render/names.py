"""Deterministic child names within Kubernetes' limits, so a reconcile always finds what it created."""

from __future__ import annotations

import hashlib

# An Indexed Job's pods get the hostname "<job>-<index>", a DNS label (<= 63); the headless Service name
# is a DNS-1035 label. 52 leaves room for "-<index>" up to 10 digits.
MAX_ATTEMPT_NAME = 52


def _short_hash(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fit(base: str, suffix: str, limit: int) -> str:
    """`base` + `suffix` within `limit` characters; a truncated base gets a hash of the full base."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    keep = limit - len(suffix) - 7
    return f"{base[:keep].rstrip('-.')}-{_short_hash(base)}{suffix}"


def attempt_name(job_name: str, attempt: int) -> str:
    """Name of attempt N's Job, Service and ConfigMap, e.g. `sft-qwen-a2`. Starts with a letter."""
    base = job_name if job_name[0].isalpha() else f"j{job_name}"
    return fit(base.replace(".", "-"), f"-a{attempt}", MAX_ATTEMPT_NAME)


def label_value(value: str) -> str:
    """A label value (<= 63 characters)."""
    return fit(value, "", 63)

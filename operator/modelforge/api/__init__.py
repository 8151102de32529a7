"""The API of both resources: pydantic models are the single source of truth for CRDs, docs, CLI and controller."""

from .base import API_VERSION, GROUP, VERSION
from .finetunejob import FineTuneJobSpec, FineTuneJobStatus
from .modelserve import ModelServeSpec, ModelServeStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "ModelServeSpec",
    "ModelServeStatus",
]

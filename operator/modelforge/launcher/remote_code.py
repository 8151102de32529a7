"""A model's own Python code (config.json `auto_map`) runs only when the spec says so.

ms-swift 4.6 loads every model, config and tokenizer with `trust_remote_code=True`
(`swift.model.register.ModelLoader.default_trust_remote_code`): a hub model or a claim's directory that
ships a `modeling_*.py` runs it, in a pod that holds the namespace's Secrets. ModelForge turns that off
unless `spec.model.trustRemoteCode` is true: the renderer puts it in the pod's environment
(MODELFORGE_TRUST_REMOTE_CODE, `modelforge run` sets it the same way), every ms-swift entry point we start
(the ranks' `sft`, `export` for the merge, `infer` for `modelforge chat`, `deploy`) calls `apply_policy`
first, and vLLM gets `--trust-remote-code` only then. Transformers then refuses a model that needs its own
code (a model_type transformers does not know) with "...trust_remote_code...", which the pre-flight of a
local model says first, naming the field (`remote_code_problem`); one whose model_type transformers knows
loads with transformers' own classes, its shipped code unrun.

    python -m modelforge.launcher.remote_code export ARGS   # `swift export ARGS` under the policy
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..paths import TRUST_REMOTE_CODE_ENV as TRUST_ENV


def trusted(env: Mapping[str, str] = os.environ) -> bool:
    return env.get(TRUST_ENV) == "1"


def apply_policy(env: Mapping[str, str] = os.environ) -> bool:
    """Refuse a model's own code in this process unless trusted; True when trusted.

    At transformers' one decision point (`resolve_trust_remote_code`): whatever a caller passes, the
    answer is what transformers gives for trust_remote_code=False (its own classes for an architecture it
    knows, else its error naming trust_remote_code). ms-swift passes True in more places than its
    ModelLoader default (model_meta's config probe, several model families' processors), so flipping that
    default alone lets shipped code run: tests/integration/test_remote_code.py caught it."""
    trust = trusted(env)
    if trust:
        return True
    import transformers.dynamic_module_utils as dynamic

    original = dynamic.resolve_trust_remote_code
    if not getattr(original, "modelforge_untrusted", False):

        def untrusted(trust_remote_code: object, *args: object, **kwargs: object) -> bool:
            return bool(original(False, *args, **kwargs))

        untrusted.modelforge_untrusted = True  # type: ignore[attr-defined]
        dynamic.resolve_trust_remote_code = untrusted  # what a module imported from now on binds
        for name, module in list(sys.modules.items()):  # ...and the ones that bound it already
            # The module's own namespace, never getattr: transformers' lazy modules import on attribute
            # access (an image processor needing torchvision, say, which this image may not have).
            namespace = getattr(module, "__dict__", None) if name.startswith("transformers") else None
            if namespace is not None and namespace.get("resolve_trust_remote_code") is original:
                namespace["resolve_trust_remote_code"] = untrusted
    from swift.model.register import ModelLoader

    ModelLoader.default_trust_remote_code = False  # its loaders then say so in their warnings, too
    return False


def remote_code_problem(model_dir: Path, trust: bool) -> str | None:
    """Why a local model will not load without its own code, naming the field that allows it; or None."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not a model directory we can read: the loader says why
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if trust or not auto_map:
        return None
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING:
        return None  # transformers has the architecture itself: it loads without the shipped code
    modules = sorted({str(v).split(".")[0] for v in (auto_map.values() if isinstance(auto_map, dict) else [])})
    return (f"spec.model.trustRemoteCode: {model_dir} ships its own code ({', '.join(modules) or 'auto_map'}) and "
            "ModelForge does not run a model's code unless asked: set spec.model.trustRemoteCode: true if you "
            "trust where the model comes from")  # fmt: skip


def run_swift(command: str, args: Sequence[str]) -> bool:
    """ms-swift's `swift COMMAND ARGS`, in this process, under the policy (what ms-swift's CLI runs in a
    subprocess); False when this ms-swift has no such command."""
    spec = importlib.util.find_spec(f"swift.cli.{command}")  # as ms-swift's CLI finds it (swift imports lazily)
    if spec is None or spec.origin is None:
        return False
    apply_policy()
    sys.argv = [spec.origin, *args]
    runpy.run_path(spec.origin, run_name="__main__")
    return True


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit("usage: python -m modelforge.launcher.remote_code COMMAND [ARGS] (a `swift` command)")
    if not run_swift(args[0], args[1:]):
        raise SystemExit(f"ms-swift has no command {args[0]!r} here (no swift.cli.{args[0]})")


if __name__ == "__main__":
    main()

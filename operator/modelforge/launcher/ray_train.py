"""The Ray Train runtime (`distributed.runtime: ray`): Ray Train's TorchTrainer starts the ranks, each one
runs the same per-rank entry as under torchrun (launcher/rank.py: world-size check, collective timeout,
heartbeat, then ms-swift's `sft` in process).

    python -m modelforge.launcher.ray_train --workers N [--use-gpu] [--address local|auto]
        --collective-timeout S --storage DIR -- <swift sft arguments>

This process is Ray's *driver*: locally (`modelforge run`) it starts a Ray instance of its own on loopback
(`--address local`) and stops it when it ends; in a KubeRay RayJob it is the job's entrypoint on the head
pod and joins the cluster KubeRay started (`--address auto`). launcher/run.py runs it exactly as it runs
torchrun (pre-flight, resume, progress, watchdog, outcome are the same code).

Why not ms-swift's own `--use_ray`: in 4.6 it is built for GPU/NPU device groups (its resource manager
drops the CPU device type and sets no RANK/WORLD_SIZE on CPU). Why in process: Ray Train has already
initialised the process group when the worker function runs, and a child process could not reuse its
rendezvous port (rank 0's store holds it). Restarts: Ray Train's failure config is left at 0 on purpose:
the operator restarts the gang as a new attempt (a new RayJob) with the same backoff, restart count and
resume from the output claim as with torchrun, so failurePolicy.maxRestarts means one thing for both
runtimes (see docs/launcher.md, "Picking a runtime").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# The variables the launcher computes for the ranks (not the pod's): forwarded to every worker. Secrets are
# never among them: in a RayJob each worker pod gets them from its own Secret references.
FORWARDED_PREFIXES = ("MODELFORGE_HEARTBEAT_DIR", "HF_HUB_", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                      "MODELSCOPE_OFFLINE", "TOKENIZERS_PARALLELISM")  # fmt: skip
# A Ray instance of our own, on loopback only: without the first variable Ray replaces 127.0.0.1 with the
# host's address on Linux; the others stop it writing an auth token into ~/.ray and reporting usage.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
# Every run: the workers' lines reach the log undeduplicated and without colour codes, so the launcher's
# classifier (outcome.py) and a person reading `kubectl logs` see what each rank printed.
LOG_ENV = {"RAY_DEDUP_LOGS": "0", "RAY_COLOR_PREFIX": "0"}


def forwarded_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES)}


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: a rank, as launcher/rank.py runs it under torchrun."""
    from .rank import run_rank

    os.environ.update(config["env"])
    _outside_swift_ray_mode()
    code = run_rank(config["expect"], config["collective_timeout"], config["backend"], config["sft_args"])
    if code != 0:
        raise RuntimeError(f"modelforge: rank exited with code {code}")


def _outside_swift_ray_mode() -> None:
    """ms-swift takes any process where Ray is initialised for one of its own `--use_ray` workers (and then
    looks for RAY_SWIFT_GROUP). A Ray Train worker is not one: ms-swift must run as in a torchrun rank.
    Its helper answers that question in one place (swift/ray_utils/base.py, RayHelper.ray_inited), asked
    at import and at call time: answered here before ms-swift's training code is imported."""
    from swift.ray_utils.base import RayHelper

    RayHelper.ray_inited = staticmethod(lambda: False)


def _init_ray(address: str, workers: int, temp_dir: str | None) -> None:
    import ray

    if address == "local":
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers + 1), include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=temp_dir, log_to_driver=True,
                 configure_logging=False)  # fmt: skip
    else:
        ray.init(address=address, log_to_driver=True, configure_logging=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelforge.launcher.ray_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--workers", type=int, required=True, help="Ray Train workers (= ranks)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL")
    parser.add_argument("--address", default="local", help="local: start Ray here; auto: join the cluster")
    parser.add_argument("--collective-timeout", type=int, default=1800, help="seconds, once training began")
    parser.add_argument("--storage", required=True, help="Ray Train's storage path (on the output volume)")
    parser.add_argument("--start-timeout", type=int, default=900,
                        help="seconds for the worker group to start (pods pulling images, scheduling)")  # fmt: skip
    parser.add_argument("sft_args", nargs=argparse.REMAINDER, help="-- then the arguments of `swift sft`")
    args = parser.parse_args(argv)
    sft_args = list(args.sft_args[1:] if args.sft_args[:1] == ["--"] else args.sft_args)

    os.environ.update(LOG_ENV)
    # Ray Train's default (60 s) is shorter than GPU worker pods take to pull an image and be scheduled.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(args.start_timeout))
    if args.address == "local":
        os.environ.update(LOCAL_RAY_ENV)
    # Ray's session directory holds Unix sockets: its path must stay short (a 107-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="mf-ray-") if args.address == "local" else None
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    # No restart loop of Ray Train's own (worker errors, controller failures and preemptions each default to
    # another limit; -1 is forever): a failure ends the attempt, the operator restarts the gang.
    # (Ray Train v2's FailureConfig, what ray.train exports at runtime; its stubs show v1's.)
    no_restarts = FailureConfig(max_failures=0, controller_failure_limit=0, max_preemption_failures=0)  # type: ignore[call-arg]
    _init_ray(args.address, args.workers, temp_dir)
    config = {
        "env": forwarded_env(dict(os.environ)),
        "expect": args.workers,
        "collective_timeout": args.collective_timeout,
        "backend": "nccl" if args.use_gpu else "gloo",
        "sft_args": sft_args,
    }
    scaling = ScalingConfig(num_workers=args.workers, use_gpu=args.use_gpu,
                            resources_per_worker=None if args.use_gpu else {"CPU": 1})  # fmt: skip
    storage = str(Path(args.storage).resolve())
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=config,
        # Setup (model download, tokenizing) may take long; the collective timeout applies once training began.
        torch_config=TorchConfig(backend=config["backend"], timeout_s=7200),
        scaling_config=scaling,
        run_config=RunConfig(name="modelforge", storage_path=storage, failure_config=no_restarts),
    )
    print(f"modelforge: Ray Train with {args.workers} worker(s) ({config['backend']})", flush=True)
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps the worker's error; its traceback is already in the log above
        # One line: the workers' own tracebacks are above it in the log; the launcher classifies from those.
        said = (str(exc).strip().splitlines() or [""])[0][:500]
        print(f"modelforge: Ray Train failed: {type(exc).__name__}: {said}", flush=True)
        return 1
    finally:
        import ray

        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

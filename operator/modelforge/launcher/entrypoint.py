"""`modelforge launch`: the training pod's entrypoint. Reads the job ConfigMap and the pod environment."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..api.conditions import OUTCOME_PREFIX, Reason
from ..api.finetunejob import FineTuneJobSpec, Runtime
from ..paths import JOB_CONFIG, OUTPUT_ROOT, PVC_ROOT
from .devices import visible_gpus
from .distributed import EnvironmentError_, World, pod_world
from .outcome import Outcome, failure, write_termination_message
from .run import RunOptions, run_attempt

DEFAULT_PROGRESS_PORT = 8090


def launch_in_pod(config: Path = Path(JOB_CONFIG), termination_log: Path = Path("/dev/termination-log")) -> Outcome:
    env = dict(os.environ)
    try:
        job = json.loads(config.read_text())
        spec = FineTuneJobSpec.model_validate(job["spec"])
        ray = spec.distributed.runtime == Runtime.RAY
        gpus = visible_gpus(env)
        # Under Ray this is the head: no GPU of its own, the world is the workers' (nodes x gpusPerNode).
        world = World(spec.resources.nodes, 0, spec.resources.gpus_per_node, None, 0) if ray else pod_world(env, gpus)
    except (OSError, ValueError, KeyError, EnvironmentError_) as exc:
        outcome = failure(Reason.CONFIG_ERROR, f"cannot start: {exc}")
        write_termination_message(outcome, termination_log)
        print(OUTCOME_PREFIX + outcome.to_json(), flush=True)
        return outcome
    options = RunOptions(
        name=job["name"],
        output_root=Path(env.get("MODELFORGE_OUTPUT_ROOT", OUTPUT_ROOT)),
        world=world,
        local=False,
        env=env,
        device=env.get("MODELFORGE_RAY_WORKER_DEVICE", "cuda") if ray else "cuda" if gpus else "cpu",
        termination_log=termination_log,
        sink=sys.stdout,  # ms-swift's own output is the pod's log (kubectl logs)
        progress_port=int(env.get("MODELFORGE_PROGRESS_PORT", DEFAULT_PROGRESS_PORT)),
        output_uri=job.get("outputUri"),
        # Set only when a pod's program runs outside its container (tests/cluster): where the pod's
        # volumes are, and the pod IP to serve /progress on.
        pvc_root=env.get("MODELFORGE_PVC_ROOT", PVC_ROOT),
        progress_host=env.get("MODELFORGE_PROGRESS_HOST", "0.0.0.0"),
        ray_address=env.get("MODELFORGE_RAY_ADDRESS", "auto"),  # KubeRay's cluster; a test gives its own
    )
    outcome = run_attempt(spec, options)
    if ray:
        print(OUTCOME_PREFIX + outcome.to_json(), flush=True)
    return outcome

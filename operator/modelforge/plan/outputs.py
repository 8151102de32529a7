"""Where a FineTuneJob's results are: the one function that names them, for the launcher (what it wrote),
`modelforge render` and the operator (where they will be), and serving (what it loads).

Under the output root (pvc://claim/subPath on a cluster, a directory locally): `run/` is ms-swift's output
directory with its checkpoints (and `last-checkpoint`, its link to the newest), `merged/` the merged model,
`eval/` the evaluation's files, `plots/` the loss curve.
"""

from __future__ import annotations

from ..api.finetunejob import FineTuneJobSpec, Method
from ..paths import RUN_DIR

MERGED_DIR = "merged"
LAST_CHECKPOINT = "last-checkpoint"  # ms-swift's link to the newest checkpoint in the run directory


def output_root_uri(job_name: str, spec: FineTuneJobSpec) -> str | None:
    """pvc://claim/subPath of the job's output (subPath defaults to the job's name); None without spec.output."""
    if spec.output is None:
        return None
    return f"pvc://{spec.output.claim_name}/{spec.output.sub_path or job_name}"


def output_paths(
    root: str, spec: FineTuneJobSpec, checkpoint: str | None = LAST_CHECKPOINT, merged: bool | None = None
) -> dict[str, str]:
    """status.outputs under `root`: outputDir, the adapter (or the full model) at `checkpoint` (a checkpoint's
    directory name; None: there is none), and the merged model when `merged` (default: spec.output.merge)."""
    root = root.rstrip("/")
    outputs = {"outputDir": f"{root}/{RUN_DIR}"}
    if checkpoint is not None:
        outputs["model" if spec.method == Method.FULL else "adapter"] = f"{root}/{RUN_DIR}/{checkpoint}"
    if merged is None:
        merged = bool(spec.output and spec.output.merge)
    if merged and spec.method != Method.FULL:
        outputs["mergedModel"] = f"{root}/{MERGED_DIR}"
    return outputs

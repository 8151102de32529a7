"""Every example users copy: valid for the API server, renderable, and valid Kubernetes objects."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from modelforge.cli import main
from modelforge.specfile import load_documents

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLUSTER_EXAMPLES = sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "quickstart")
# Serving examples that take a FineTuneJob's adapter render together with that job.
RENDER_WITH = {"multi-lora-serving": [EXAMPLES / "qwen3-8b-qlora" / "finetunejob.yaml"]}
# Examples the operator refuses before any pod, on purpose (their README says why and how to fix it).
REFUSED = {"qwen3-8b-qlora": "does not fit: no DeepSpeed: 8.4 GiB per GPU of 8"}


def test_every_seed_scenario_has_an_example_with_a_readme():
    assert len(CLUSTER_EXAMPLES) >= 5
    for directory in [*CLUSTER_EXAMPLES, EXAMPLES / "quickstart"]:
        assert (directory / "README.md").exists(), directory.name


def fitted_seed1(tmp_path: Path) -> Path:
    """Seed 1 as its README says to fix it for a 16 GB card (the serve example needs its adapter)."""
    text = (EXAMPLES / "qwen3-8b-qlora" / "finetunejob.yaml").read_text().replace("gpuMemory: 8Gi", "gpuMemory: 16Gi")
    (tmp_path / "finetunejob.yaml").write_text(text)
    return tmp_path / "finetunejob.yaml"


@pytest.mark.parametrize("directory", CLUSTER_EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_renders(directory, capsys, tmp_path):
    files = sorted(directory.glob("*.yaml"))
    assert main(["validate", *map(str, files)]) == 0, capsys.readouterr().err
    extra = RENDER_WITH.get(directory.name, [])
    code = main(["render", *map(str, [*files, *extra])])
    err = capsys.readouterr().err
    if directory.name in REFUSED:
        # What the operator would do: nothing, with the planner's reason and fix.
        assert code == 1 and REFUSED[directory.name] in err and "lora.rank: 16" in err, err
    elif extra:
        # With the job as shipped the serve is refused too (nothing to serve); with the README's fix it renders.
        assert code == 1 and "would be refused, so there is nothing to serve" in err, err
        assert main(["render", *map(str, files), str(fitted_seed1(tmp_path))]) == 0, capsys.readouterr().err
    else:
        assert code == 0, err
    for path in files:
        for doc in load_documents(path):
            # Kueue's objects: its CRDs check them on the real API server (tests/cluster/test_kueue.py).
            if not doc.data["apiVersion"].startswith(("modelforge.io/", "kueue.x-k8s.io/")):
                assert kubernetes_validate.validate(doc.data, "1.33", strict=True) == "1.33", path.name


def test_quickstart_spec_is_valid(capsys):
    assert main(["validate", str(EXAMPLES / "quickstart" / "finetunejob.yaml")]) == 0

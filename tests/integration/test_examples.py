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


def test_every_seed_scenario_has_an_example_with_a_readme():
    assert len(CLUSTER_EXAMPLES) >= 5
    for directory in [*CLUSTER_EXAMPLES, EXAMPLES / "quickstart"]:
        assert (directory / "README.md").exists(), directory.name


@pytest.mark.parametrize("directory", CLUSTER_EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_renders(directory, capsys):
    files = sorted(directory.glob("*.yaml"))
    assert main(["validate", *map(str, files)]) == 0, capsys.readouterr().err
    extra = RENDER_WITH.get(directory.name, [])
    assert main(["render", *map(str, [*files, *extra])]) == 0, capsys.readouterr().err
    for path in files:
        for doc in load_documents(path):
            if not doc.data["apiVersion"].startswith("modelforge.io/"):
                assert kubernetes_validate.validate(doc.data, "1.33", strict=True) == "1.33", path.name


def test_quickstart_spec_is_valid(capsys):
    assert main(["validate", str(EXAMPLES / "quickstart" / "finetunejob.yaml")]) == 0

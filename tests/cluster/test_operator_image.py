"""The operator image, as the chart deploys it: `modelforge operator` in the image the chart names, with the
Deployment's security context (UID 10001, read-only root, no capabilities) and env, authenticated in-cluster
by a token of the chart's ServiceAccount at the path the kubelet projects it to, reconciles a FineTuneJob on
the local control plane: the attempt's Job appears. The container runs on this machine's loopback, where the
API server listens (the Service's address is 127.0.0.1 here)."""

from __future__ import annotations

import base64
import contextlib
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.images.conftest import images_present  # noqa: F401  (the images tier's precondition)
from tests.images.pod import PodRunner

from .kube import Kube, kubectl
from .operator import Release, free_port

pytestmark = pytest.mark.images


def service_account_volume(kubeconfig: Path, release: Release, dest: Path) -> Path:
    """token, ca.crt and namespace, as the kubelet's projected volume holds them."""
    token = kubectl(kubeconfig, "create", "token", release.service_account, "-n", release.namespace,
                    "--duration=1h").stdout.strip()  # fmt: skip
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    else:
        ca = Path(cluster["certificate-authority"]).read_text()
    dest.mkdir(parents=True)
    for name, text in (("token", token), ("ca.crt", ca), ("namespace", release.namespace)):
        (dest / name).write_text(text)
        (dest / name).chmod(0o644)
    return dest


def test_the_operator_image_reconciles_a_finetunejob(kube: Kube, kubeconfig: Path, claims: str, tmp_path: Path) -> None:
    ns = claims  # the test's namespace, with Bound claims `data` and `models`
    release = Release(kubeconfig)
    deployment = release.install()
    try:
        pod_spec = deployment["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        server = urllib.parse.urlsplit(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
        liveness = free_port()
        pod = PodRunner(
            pod_spec, tmp_path / "pod", network="host",
            service_account=service_account_volume(kubeconfig, release, tmp_path / "sa"),
            # What the kubelet adds for the Service `kubernetes` (here on loopback); the chart's ports moved to
            # free ones, since the container shares this machine's network.
            extra_env={"KUBERNETES_SERVICE_HOST": str(server.hostname), "KUBERNETES_SERVICE_PORT": str(server.port)},
        )  # fmt: skip
        for entry in container["env"]:
            if entry["name"] == "MODELFORGE_LIVENESS_PORT":
                entry["value"] = str(liveness)
            elif entry["name"] == "MODELFORGE_METRICS_PORT":
                entry["value"] = str(free_port())
        assert container["image"] == "ghcr.io/modelforge/operator:0.1.0"  # the chart's default: what make images tags
        cid = pod.start("operator")
        try:
            deadline = time.monotonic() + 60
            while True:
                assert pod.wait_running(cid), pod.logs(cid)[-3000:]
                with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz",
                                                                          timeout=1):  # fmt: skip
                    break
                assert time.monotonic() < deadline, pod.logs(cid)[-3000:]
                time.sleep(0.5)
            kube.create({"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob",
                         "metadata": {"name": "from-the-image", "namespace": ns},
                         "spec": {"model": {"source": "Qwen/Qwen3-0.6B"}, "datasets": [{"source": "org/data"}],
                                  "hyperparameters": {"maxSteps": 10}, "output": {"claimName": "models"}}})  # fmt: skip
            try:
                jobs = kube.wait_for(lambda: kube.list("Job", ns), 60, "the operator in its image created the Job")
            except AssertionError as missing:
                ftj = kube.get("FineTuneJob", ns, "from-the-image") or {}
                raise AssertionError(f"{missing}\nstatus: {ftj.get('status')}\n{pod.logs(cid)[-3000:]}") from None
            assert jobs[0]["metadata"]["ownerReferences"][0]["name"] == "from-the-image"
            said = pod.logs(cid)
            assert "forbidden: User" not in said, said[-3000:]
            pod.signal(cid, "TERM")  # what the kubelet sends at a rollout
            assert pod.wait(cid, 60) == 0, pod.logs(cid)[-3000:]
        finally:
            pod.remove()
    finally:
        release.uninstall()

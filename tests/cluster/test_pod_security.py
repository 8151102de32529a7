"""The Pod Security Standard `restricted` on the real control plane: the kube-apiserver's PodSecurity
admission, enforcing in a namespace, admits the training pods the Job controller creates and the serving
pods the ReplicaSet controller creates; a spec that adds IPC_LOCK is refused there, and the FineTuneJob
says so in its Running condition (the Job controller's FailedCreate event) instead of waiting forever."""

from __future__ import annotations

from .kube import Kube
from .operator import OperatorProcess
from .test_finetunejob import condition, finetunejob, running_pods
from .test_modelserve import serve

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def test_restricted_namespace_admits_training_and_serving_pods(kube: Kube, operator: OperatorProcess) -> None:
    ns = kube.namespace("t-restricted", RESTRICTED)
    try:
        kube.claim(ns, "data")
        kube.claim(ns, "models")
        kube.create(finetunejob(ns, resources={"nodes": 2, "gpusPerNode": 1}))
        pods = running_pods(kube, ns, "sft", 1, 2)
        assert all(p["spec"]["securityContext"]["runAsNonRoot"] for p in pods)
        # vLLM with every helper container: the agent (live adapters, API key) and the chat-template step.
        kube.create(serve(ns, "helpers", engine="vllm", systemPrompt="Be brief.", extraArgs=[],
                          adapters=[{"name": "sql", "source": "pvc://models/adapters/sql"}],
                          apiKeySecretRef={"name": "key", "key": "key"},
                          resources={"gpusPerReplica": 1}))  # fmt: skip
        served = kube.wait_for(lambda: kube.list("Pod", ns, {"modelforge.io/serve": "helpers"}), 60, "a serve pod")
        names = {c["name"] for c in [*served[0]["spec"]["containers"], *served[0]["spec"]["initContainers"]]}
        assert names == {"engine", "agent", "chat-template"}

        kube.create(finetunejob(ns, "ipc", resources={"gpusPerNode": 1, "security": {"addCapabilities": ["IPC_LOCK"]}}))
        refused = kube.wait_for(lambda: (c := condition(kube, ns, "Running", "ipc")).get("reason") == "PodsRefused"
                                and c, 60, "the ipc job's pods refused")  # fmt: skip
        assert 'violates PodSecurity "restricted:latest"' in refused["message"], refused
        assert "IPC_LOCK" in refused["message"], refused
        assert not kube.list("Pod", ns, {"modelforge.io/job": "ipc"})
    finally:
        kube.delete("Namespace", None, ns)
        kube.wait_for(lambda: not kube.list("Pod", ns), 60, f"the pods of {ns} gone")

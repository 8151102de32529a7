"""Issue 15, secrets: what a pod says reaches status and Events redacted."""

from __future__ import annotations

import json

from modelforge.api.redact import MASK, redact
from modelforge.launcher.outcome import Outcome, redact_outcome, secret_values, write_termination_message
from modelforge.plan.lifecycle import pod_failure_cause
from modelforge.plan.pods import pod_trouble

HF = "hf_" + "aB3dE5fG7hI9jK1lM3nO5pQ7"


def test_tokens_headers_and_known_values_are_masked():
    text = (
        f"GET https://huggingface.co/x?token={HF} 401; sk-{'x' * 20} ms-12345678-aaaa-bbbb-cccc-1234567890ab; "
        "Bearer eyJhbGciOi.J9.sig and the value s3cr3t-value-42"
    )
    out = redact(text, ["s3cr3t-value-42"])
    for leaked in (HF, "sk-xxxx", "ms-12345678", "eyJhbGciOi", "s3cr3t-value-42"):
        assert leaked not in out
    assert out.count(MASK) == 5 and out.startswith("GET https://huggingface.co/x?token=")
    assert redact("Authorization: Basic dXNlcjpwYXNz, then") == f"Authorization: {MASK}, then"


def test_url_passwords_and_key_values_are_masked():
    assert redact("clone https://bot:ghp9x8Secret@git.example/r.git failed") == (
        f"clone https://bot:{MASK}@git.example/r.git failed"
    )
    assert (
        redact('{"api_key": "k-12345678", "password": "hunter22"}') == f'{{"api_key": "{MASK}", "password": "{MASK}"}}'
    )
    assert redact("HF_TOKEN=abcdefgh1 api-key: zzzz9999 secret=s3cr3tval") == (
        f"HF_TOKEN={MASK} api-key: {MASK} secret={MASK}"
    )
    assert redact("{'api_key': 'abc12345', 'password': 'hunter22'}") == f"{{'api_key': '{MASK}', 'password': '{MASK}'}}"
    assert (
        redact("VLLM_API_KEY=k9k9k9k9 MODELSCOPE_API_TOKEN=t0t0t0t0")
        == f"VLLM_API_KEY={MASK} MODELSCOPE_API_TOKEN={MASK}"
    )
    assert (
        redact("redis://:p4ssw0rd@cache:6379 --hub_token abc12345") == f"redis://:{MASK}@cache:6379 --hub_token {MASK}"
    )
    # ms-swift's argument dump of unset credentials stays readable
    assert redact("hub_token=None, api_key=None)") == "hub_token=None, api_key=None)"


def test_ordinary_text_is_left_alone():
    ordinary = [
        "resized the token embeddings to 2048",
        "https://huggingface.co/Qwen/Qwen3-8B",
        "secret: no",
        "basic 2048-dim features",
    ]
    for text in ("--max_new_tokens 64", "Bearer of bad news", "token=5", "hf_hub_download failed", *ordinary):
        assert redact(text, ["", "ab"]) == text


def test_an_outcome_line_with_a_token_ends_redacted_in_status(tmp_path):
    """End to end: the launcher writes its outcome (with the pod's Secret env known), the kubelet copies it
    into the terminated state, and the plan layer turns it into the condition message."""
    outcome = Outcome("Failed", "Unknown", f"push failed: 401 for {HF}", decisive_lines=["key=topsecretkey1"])
    path = tmp_path / "termination-log"
    env = {"MODELFORGE_API_KEY": "topsecretkey1"}
    path.write_text(redact_outcome(outcome, secret_values(env)).to_json())
    write_termination_message(outcome, tmp_path / "plain")  # the real writer: patterns even without the env
    assert HF not in (tmp_path / "plain").read_text()
    pod = {
        "metadata": {"name": "j-0"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": path.read_text()}}}],
        },
    }
    cause = pod_failure_cause(pod)
    assert cause is not None and HF not in cause.message and MASK in cause.message
    assert "topsecretkey1" not in json.dumps(cause.outcome)
    # Not the launcher's JSON (a crash before it): the raw tail is redacted too.
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = f"Authorization: Bearer {HF}"
    cause = pod_failure_cause(pod)
    assert cause is not None and HF not in cause.message


def test_pod_trouble_redacts_an_init_containers_last_line():
    pod = {
        "metadata": {"name": "s-0"},
        "status": {
            "initContainerStatuses": [
                {"name": "chat-template", "state": {"terminated": {"exitCode": 1, "message": f"401 {HF}"}}}
            ]
        },
    }
    trouble = pod_trouble((pod,))
    assert trouble is not None and HF not in trouble[1] and MASK in trouble[1]

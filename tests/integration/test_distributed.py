"""Distributed training for real on the CPU: two launcher "nodes" (tests/integration/distributed_nodes.py says
what differs from the pods) run the real `swift sft` under torchrun, gloo, one process each.

Proven here: the two nodes train ONE model (one process group of 2, one loss curve, the data split between
them); a node alone, a node with an impossible rank and a node that believes in another world fail fast and
classified; a killed rank ends both nodes with the retryable RankFailed and a new attempt resumes from the
newest complete checkpoint to the last step; a stopped (SIGSTOP) rank is caught by the stall watchdog on
both nodes (Stalled, retryable) instead of hanging the job. The figures these measure are printed and
recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from modelforge.launcher.checkpoints import list_checkpoints, missing_parts

from .distributed_nodes import STEPS, Node, job_spec, logged_steps, start_nodes, step_of, volumes, wait_for_step

pytestmark = pytest.mark.integration
LONG = {"hyperparameters": {"maxSteps": 160, "loggingSteps": 1}, "checkpointing": {"saveSteps": 40, "keepLast": 10}}


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return volumes(tmp_path_factory.mktemp("distributed"))


@pytest.fixture
def output(claims: Path) -> Iterator[Path]:
    out = claims / "models" / "sft"
    shutil.rmtree(out, ignore_errors=True)
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()


def finish(started: list[Node], timeout: float = 300) -> list[int]:
    return [node.wait(timeout) for node in started]


def test_two_nodes_train_one_model(claims: Path, output: Path, nodes: list[Node], tmp_path: Path) -> None:
    nodes += start_nodes(job_spec(), claims, tmp_path)
    codes = finish(nodes)
    assert codes == [0, 0], [n.text()[-3000:] for n in nodes]
    assert [n.outcome()["reason"] for n in nodes] == ["Completed", "Completed"]
    assert "2 processes joined one process group (gloo" in nodes[0].text()
    # launcher/rank.py compared the ranks' trained weights: identical (DDP averaged the gradients). Before
    # `--use_cpu true`, transformers ignored the group on a CPU and this failed: two models, one per rank.
    assert "modelforge: the 2 ranks hold identical weights after training" in nodes[0].text()
    rows = logged_steps(output)
    # One curve (rank 0 logs), not two interleaved: each step once, 1..STEPS.
    assert [step_of(r) for r in rows] == list(range(1, STEPS + 1)), rows
    # The data was split between the ranks: each step took 2 rows per rank from the 64, so STEPS steps are
    # STEPS * 4 / 64 epochs; two independent trainings would each be at half that.
    assert float(rows[-1]["epoch"]) == pytest.approx(STEPS * 2 * 2 / 64), rows[-1]
    assert [c.name for c in list_checkpoints(output / "run")] == [f"checkpoint-{s}" for s in (6, 12, 18, 24)]
    assert nodes[0].outcome()["outputs"]["adapter"] == "pvc://models/sft/run/checkpoint-24", (
        missing_parts(output / "run" / "checkpoint-24"),
        sorted(p.name for p in (output / "run" / "checkpoint-24").iterdir()),
        nodes[0].text()[-5000:],
    )


def test_a_node_alone_fails_the_rendezvous_in_time(claims: Path, output: Path, nodes: list[Node],
                                                   tmp_path: Path) -> None:  # fmt: skip
    spec = job_spec(distributed={"rendezvousTimeoutSeconds": 15})
    started = time.monotonic()
    nodes += start_nodes(spec, claims, tmp_path, indexes=(0,))
    assert finish(nodes, 120) == [75]  # retryable (EX_TEMPFAIL)
    waited = time.monotonic() - started
    outcome = nodes[0].outcome()
    assert outcome["reason"] == "Rendezvous" and outcome["retryable"], outcome
    print(f"\nnode 0 alone: Rendezvous after {waited:.1f} s (rendezvousTimeoutSeconds 15)")
    assert waited < 60, waited


def test_a_node_with_the_wrong_contract_fails_fast(claims: Path, output: Path, nodes: list[Node],
                                                   tmp_path: Path) -> None:  # fmt: skip
    # Node index outside the job, and a node told it is the only one (it would train its own model).
    nodes += start_nodes(job_spec(), claims, tmp_path, indexes=(2,))
    nodes += start_nodes(job_spec(), claims, tmp_path / "alone", indexes=(0,),
                         env_override={0: {"MODELFORGE_NNODES": "1"}})  # fmt: skip
    assert finish(nodes, 60) == [1, 1]
    wrong_rank, wrong_world = (n.outcome() for n in nodes)
    assert wrong_rank["reason"] == "ConfigError" and "JOB_COMPLETION_INDEX=2 is outside 0..1" in wrong_rank["message"]
    assert wrong_world["reason"] == "ConfigError" and not wrong_world["retryable"], wrong_world
    assert "asks for 2 GPU processes but the pod environment gives world size 1" in wrong_world["message"]


def test_a_killed_rank_fails_both_nodes_and_the_next_attempt_resumes(claims: Path, output: Path, nodes: list[Node],
                                                                     tmp_path: Path) -> None:  # fmt: skip
    spec = job_spec(**LONG)
    nodes += start_nodes(spec, claims, tmp_path / "a1")
    wait_for_step(output, 50, nodes)  # past checkpoint-40
    (victim,) = nodes[1].workers()
    victim.kill()
    killed = time.monotonic()
    at_kill = step_of(logged_steps(output)[-1])
    codes = finish(nodes, 120)
    detected = time.monotonic() - killed
    assert codes == [75, 75], [n.text()[-3000:] for n in nodes]
    outcomes = [n.outcome() for n in nodes]
    assert [o["reason"] for o in outcomes] == ["RankFailed", "RankFailed"], outcomes
    assert all(o["retryable"] for o in outcomes)
    resume_from = max(int(c.name.split("-")[1]) for c in list_checkpoints(output / "run"))
    assert resume_from >= 40, resume_from
    # Attempt 2 (what the operator creates next): both nodes, from the newest complete checkpoint.
    nodes.clear()
    nodes += start_nodes(spec, claims, tmp_path / "a2", attempt=2)
    assert finish(nodes) == [0, 0], [n.text()[-3000:] for n in nodes]
    assert f"resuming from checkpoint-{resume_from}" in nodes[0].text()
    assert nodes[0].outcome()["last_step"] == 160
    assert step_of(logged_steps(output)[-1]) == 160
    print(f"\nrank 1 killed at step {at_kill}: both nodes out in {detected:.1f} s; resumed from step {resume_from} "
          f"(steps lost: {at_kill - resume_from})")  # fmt: skip


def test_a_stopped_rank_is_caught_by_the_watchdog_on_both_nodes(claims: Path, output: Path, nodes: list[Node],
                                                                tmp_path: Path) -> None:  # fmt: skip
    spec = job_spec(**LONG, failurePolicy={"stallTimeoutSeconds": 10})
    nodes += start_nodes(spec, claims, tmp_path)
    wait_for_step(output, 20, nodes)
    (victim,) = nodes[1].workers()
    trainers = [*nodes[0].workers(), victim]  # torchrun starts each in a session of its own
    victim.suspend()  # SIGSTOP: alive, holding its sockets, doing nothing; rank 0 waits in its all-reduce
    stopped = time.monotonic()
    codes = finish(nodes, 120)
    detected = time.monotonic() - stopped
    assert codes == [75, 75], [n.text()[-3000:] for n in nodes]
    outcomes = [n.outcome() for n in nodes]
    assert [o["reason"] for o in outcomes] == ["Stalled", "Stalled"], outcomes
    assert "stallTimeoutSeconds is 10" in outcomes[1]["message"] and "rank 1 " in outcomes[1]["message"]
    assert "rank 0 " in outcomes[0]["message"]
    assert detected < 10 + 30, detected  # the timeout, the watchdog's tick and the stop grace
    left = [p.pid for p in trainers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"training processes left behind: {left}"
    print(f"\nrank 1 stopped: both nodes Stalled after {detected:.1f} s (stallTimeoutSeconds 10)")


def test_sigterm_to_one_node_saves_one_checkpoint_on_every_node_and_both_exit_75(claims: Path, output: Path,
                                                                                  nodes: list[Node],
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """An evicted pod (SIGTERM to node 1's launcher only): the ranks agree on the step (one all-reduce per
    step), save checkpoint-<step> together and stop; both launchers end Interrupted, exit 75."""
    spec = job_spec(hyperparameters={"maxSteps": 400, "loggingSteps": 1}, checkpointing={"saveSteps": 1000})
    nodes += start_nodes(spec, claims, tmp_path / "a1")
    wait_for_step(output, 8, nodes)
    at_signal = step_of(logged_steps(output)[-1])
    nodes[1].proc.send_signal(signal.SIGTERM)
    assert finish(nodes, 120) == [75, 75], [n.text()[-3000:] for n in nodes]
    outcomes = [n.outcome() for n in nodes]
    assert [o["reason"] for o in outcomes] == ["Interrupted", "Interrupted"], outcomes
    (saved,) = list_checkpoints(output / "run")
    step = int(saved.name.split("-")[1])
    assert at_signal <= step == step_of(logged_steps(output)[-1]) and not missing_parts(saved)
    assert "after saving" in outcomes[0]["message"] and "another node" in outcomes[0]["message"], outcomes
    assert "after saving" in outcomes[1]["message"], outcomes

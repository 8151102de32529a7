"""Distributed contract, checkpoint discovery, failure classification, progress tracking and serving."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from modelforge.api.conditions import Reason
from modelforge.launcher.checkpoints import newest_complete
from modelforge.launcher.devices import visible_gpus
from modelforge.launcher.distributed import EnvironmentError_, local_world, pod_world
from modelforge.launcher.outcome import EXIT_PERMANENT, EXIT_RETRYABLE, Outcome, classify, failure
from modelforge.launcher.progress import ProgressServer, ProgressTracker, prometheus_text

POD = {"MODELFORGE_NNODES": "4", "JOB_COMPLETION_INDEX": "2", "NPROC_PER_NODE": "8",
       "MASTER_ADDR": "big-lora-a1-0.big-lora-a1.ns.svc", "MASTER_PORT": "29500"}  # fmt: skip


def test_pod_world_multinode():
    world = pod_world(POD, visible_gpus=8)
    assert (world.size, world.node_rank, world.is_rank0_node) == (32, 2, False)
    assert world.swift_env() == {
        "NPROC_PER_NODE": "8", "MASTER_PORT": "29500", "NNODES": "4", "NODE_RANK": "2",
        "MASTER_ADDR": "big-lora-a1-0.big-lora-a1.ns.svc",
    }  # fmt: skip
    assert "world size 32 = 4 node(s) x 8 process(es), this is node 2" in world.describe()


def test_single_process_sets_no_torchrun_variables():
    assert pod_world({}, visible_gpus=1).swift_env() == {}
    assert pod_world({"NPROC_PER_NODE": "4"}, 4).swift_env() == {"NPROC_PER_NODE": "4", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(
    ("change", "visible", "message"),
    [
        ({"JOB_COMPLETION_INDEX": "4"}, 8, "JOB_COMPLETION_INDEX=4 is outside 0..3"),
        ({"MASTER_ADDR": ""}, 8, "MASTER_ADDR is not set"),
        ({"NPROC_PER_NODE": "x"}, 8, "NPROC_PER_NODE='x' is not an integer"),
        ({}, 4, "NPROC_PER_NODE=8 but only 4 GPU(s) are visible"),
    ],
)
def test_inconsistent_pod_environment(change, visible, message):
    with pytest.raises(EnvironmentError_, match=message.replace("(", r"\(").replace(")", r"\)")):
        pod_world({**POD, **change}, visible)


def test_local_world():
    world, note = local_world(requested_gpus=5, visible_gpus=0)
    assert world.size == 1 and "no GPU visible" in note
    world, note = local_world(requested_gpus=8, visible_gpus=2)
    assert world.nproc_per_node == 2 and "this machine has 2" in note


def test_visible_gpus(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert visible_gpus({}, dev=tmp_path) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,3,5"}, dev=tmp_path) == 3
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, dev=tmp_path) == 0


def make_checkpoint(run: Path, step: int, *, state: bool = True, weights: bool = True, optimizer: bool = True) -> Path:
    path = run / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"w")
    if optimizer:
        (path / "optimizer.pt").write_bytes(b"o")
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_newest_complete_checkpoint_skips_partial_ones(tmp_path):
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 20)
    make_checkpoint(tmp_path, 30, state=False)  # killed while saving
    make_checkpoint(tmp_path, 40, optimizer=False)
    (tmp_path / "checkpoint-20-merged").mkdir()
    (tmp_path / "last-checkpoint").symlink_to(tmp_path / "checkpoint-40")
    best, notes = newest_complete(tmp_path)
    assert best == tmp_path / "checkpoint-20"
    assert notes == [
        "skipping checkpoint-40: incomplete (missing optimizer state)",
        "skipping checkpoint-30: incomplete (missing trainer_state.json)",
    ]


def test_deepspeed_checkpoint_counts_as_complete(tmp_path):
    path = make_checkpoint(tmp_path, 5, optimizer=False)
    (path / "global_step5").mkdir()
    assert newest_complete(tmp_path)[0] == path


def test_no_checkpoints(tmp_path):
    assert newest_complete(tmp_path / "missing") == (None, [])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", Reason.OUT_OF_MEMORY),
        ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970", Reason.NCCL),
        ("torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError", Reason.RENDEZVOUS),
        ("pyarrow.lib.ArrowInvalid: JSON parse error: Missing a name for object member", Reason.DATA_ERROR),
        ("ValueError: remaining_argv: ['--bogus']", Reason.CONFIG_ERROR),
        ("Segmentation fault (core dumped)", Reason.UNKNOWN),
    ],
)
def test_classify(line, reason):
    found, lines = classify(["starting", line, "exiting"], interrupted=False)
    assert found == reason
    assert line in lines or reason == Reason.UNKNOWN


def test_interrupted_wins():
    assert classify(["CUDA out of memory"], interrupted=True)[0] == Reason.INTERRUPTED


def test_exit_codes_separate_retryable_from_permanent():
    assert failure(Reason.NCCL, "x").process_exit_code == EXIT_RETRYABLE
    assert failure(Reason.INTERRUPTED, "x").process_exit_code == EXIT_RETRYABLE
    assert failure(Reason.DATA_ERROR, "x").process_exit_code == EXIT_PERMANENT
    assert failure(Reason.OUT_OF_MEMORY, "x").process_exit_code == EXIT_PERMANENT
    assert Outcome("Succeeded", "Completed", "ok").process_exit_code == 0


def test_termination_message_fits_the_kubelet_limit():
    outcome = failure(Reason.UNKNOWN, "m" * 3000, decisive_lines=["x" * 1000] * 10)
    text = outcome.to_json()
    assert len(text.encode()) <= 4096
    assert json.loads(text)["reason"] == "Unknown"


LOG = [
    {"loss": 7.6, "learning_rate": 9e-05, "epoch": 0.1, "global_step/max_steps": "1/4", "train_speed(s/it)": 0.5},
    {"eval_loss": 7.2, "global_step/max_steps": "2/4"},
    {"loss": 7.1, "learning_rate": 5e-05, "epoch": 0.2, "global_step/max_steps": "2/4", "train_speed(s/it)": 2.0},
]


def test_progress_tracker_reads_increments_and_partial_lines(tmp_path):
    path = tmp_path / "logging.jsonl"
    tracker = ProgressTracker(path, tokens_per_step=1000)
    assert tracker.poll().step is None  # no file yet
    path.write_text(json.dumps(LOG[0]) + "\n" + json.dumps(LOG[1])[:10])
    record = tracker.poll()
    assert (record.step, record.total_steps, record.loss, record.tokens_per_second) == (1, 4, 7.6, 2000.0)
    with path.open("a") as handle:
        handle.write(json.dumps(LOG[1])[10:] + "\n" + json.dumps(LOG[2]) + "\n")
    record = tracker.poll()
    assert (record.step, record.percent, record.loss, record.eval_loss) == (2, 50.0, 7.1, 7.2)
    assert (record.tokens_per_second, record.eta) == (500.0, "4s")
    assert record.to_status()["summary"] == "2/4 (50%)"
    assert not record.finished
    with path.open("a") as handle:
        handle.write(json.dumps({"train_runtime": 3.0, "global_step/max_steps": "4/4"}) + "\n")
    assert tracker.poll().finished


def test_progress_server_serves_json_and_prometheus(tmp_path):
    path = tmp_path / "logging.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in LOG))
    server = ProgressServer(ProgressTracker(path), port=0, host="127.0.0.1").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        progress = json.loads(urllib.request.urlopen(f"{base}/progress", timeout=5).read())
        assert (progress["step"], progress["total_steps"], progress["summary"]) == (2, 4, "2/4 (50%)")
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "modelforge_train_step 2.0" in metrics and "modelforge_train_loss 7.1" in metrics
        assert "# TYPE modelforge_train_total_steps gauge" in metrics
    finally:
        server.stop()


def test_prometheus_text_skips_unknown_values():
    tracker = ProgressTracker(Path("/nonexistent"))
    assert prometheus_text(tracker.poll()) == "\n"


def test_progress_tracker_applies_every_line_once_under_concurrent_polls(tmp_path: Path) -> None:
    """HTTP handler threads and the supervisor's tick poll at once; no line may be lost or applied twice."""
    import threading

    from modelforge.launcher.progress import ProgressTracker

    class Counting(ProgressTracker):
        applied = 0

        def _apply(self, entry: dict) -> None:
            Counting.applied += 1
            super()._apply(entry)

    log = tmp_path / "logging.jsonl"
    log.write_text("")
    tracker = Counting(log)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            tracker.poll()

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    total = 3000
    with log.open("a") as f:
        for step in range(1, total + 1):
            line = json.dumps({"loss": 1.0 / step, "global_step/max_steps": f"{step}/{total}"}) + "\n"
            half = len(line) // 2
            f.write(line[:half])  # a line arrives in two writes, as a buffered writer may leave it
            f.flush()
            f.write(line[half:])
            f.flush()
    stop.set()
    for thread in threads:
        thread.join()
    record = tracker.poll()
    assert Counting.applied == total and record.step == total


def test_visible_gpus_counts_nvidia_and_amd_devices(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "dri").mkdir(parents=True)
    assert visible_gpus({}, dev) == 0
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (dev / name).touch()
    assert visible_gpus({}, dev) == 2
    amd = tmp_path / "amd"
    (amd / "dri").mkdir(parents=True)
    for name in ("kfd", "dri/renderD128", "dri/renderD129", "dri/card0"):
        (amd / name).touch()
    assert visible_gpus({}, amd) == 2
    assert visible_gpus({"ROCR_VISIBLE_DEVICES": "0"}, amd) == 1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, dev) == 0

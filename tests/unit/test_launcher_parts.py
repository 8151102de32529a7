"""Distributed contract, checkpoint discovery, failure classification, progress tracking and serving."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from modelforge.api.conditions import Reason
from modelforge.launcher.checkpoints import mark_bad, missing_parts, newest_complete, resume_failure
from modelforge.launcher.devices import visible_gpus
from modelforge.launcher.distributed import EnvironmentError_, local_world, pod_world
from modelforge.launcher.outcome import EXIT_PERMANENT, EXIT_RETRYABLE, Outcome, classify, failure
from modelforge.launcher.progress import LOSS_POINTS_KEPT, ProgressServer, ProgressTracker, prometheus_text
from modelforge.launcher.supervise import supervise
from modelforge.plan.lifecycle import progress_status

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


def safetensors_bytes(values: int = 4) -> bytes:
    """A real safetensors file: one F32 tensor of `values` elements."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * values)


def zip_bytes() -> bytes:
    """What torch.save writes: a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buffer.getvalue()


FULL = len(safetensors_bytes())


def make_checkpoint(run: Path, step: int, *, state: bool = True, weights: bool = True, optimizer: bool = True) -> Path:
    path = run / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if weights:
        (path / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    if optimizer:
        (path / "optimizer.pt").write_bytes(zip_bytes())
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
        "skipping checkpoint-40: not whole (optimizer state)",
        "skipping checkpoint-30: not whole (trainer_state.json)",
    ]


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("adapter_model.safetensors", lambda b: b"", "adapter_model.safetensors is empty (0 bytes)"),
        ("adapter_model.safetensors", lambda b: b[:5], "shorter than its header length"),
        ("adapter_model.safetensors", lambda b: b[:20], "its header alone declares"),
        (
            "adapter_model.safetensors",
            lambda b: b[:-1],
            f"is truncated ({FULL - 1} of the {FULL} bytes its header declares)",
        ),
        ("adapter_model.safetensors", lambda b: b[:8] + b"{" * (len(b) - 8), "has an unreadable header"),
        ("optimizer.pt", lambda b: b"", "optimizer.pt is empty (0 bytes)"),
        ("optimizer.pt", lambda b: b[: len(b) // 2], "optimizer.pt is truncated or not a torch.save file"),
        ("optimizer.pt", lambda b: b"\x80\x02pickle", "not a torch.save file"),
        ("trainer_state.json", lambda b: b[:3], "trainer_state.json"),
    ],
)
def test_a_zero_byte_or_truncated_file_makes_a_checkpoint_not_whole(tmp_path, name, damage, problem):
    older = make_checkpoint(tmp_path, 10)
    newest = make_checkpoint(tmp_path, 20)
    target = newest / name
    target.write_bytes(damage(target.read_bytes()))
    best, notes = newest_complete(tmp_path)
    assert best == older
    assert len(notes) == 1 and notes[0].startswith("skipping checkpoint-20: not whole (") and problem in notes[0]


def test_the_other_saved_files_are_checked_too(tmp_path):
    older = make_checkpoint(tmp_path, 10)
    newest = make_checkpoint(tmp_path, 20)
    (newest / "rng_state.pth").write_bytes(b"")  # a full disk while saving
    (newest / "scheduler.pt").write_bytes(zip_bytes())
    best, notes = newest_complete(tmp_path)
    assert best == older and "rng_state.pth is empty (0 bytes)" in notes[0]
    assert missing_parts(older) == []


def test_a_sharded_model_needs_every_shard_whole(tmp_path):
    path = make_checkpoint(tmp_path, 10, weights=False)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    (path / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes())
    assert missing_parts(path) == [
        "model-00002-of-00002.safetensors (named by model.safetensors.index.json) is missing"
    ]
    (path / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes()[:-4])
    assert missing_parts(path) == [
        f"model-00002-of-00002.safetensors is truncated ({FULL - 4} of the {FULL} bytes its header declares)"
    ]
    (path / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes())
    assert missing_parts(path) == []


def test_a_checkpoint_marked_bad_is_skipped_with_its_reason(tmp_path):
    older = make_checkpoint(tmp_path, 10)
    newest = make_checkpoint(tmp_path, 20)
    assert newest_complete(tmp_path) == (newest, [])
    mark_bad(newest, "resuming from it failed: _pickle.UnpicklingError: invalid load key, 'x'.")
    best, notes = newest_complete(tmp_path)
    assert best == older
    assert notes == ["skipping checkpoint-20: not whole (marked bad by an earlier attempt: resuming from it "
                     "failed: _pickle.UnpicklingError: invalid load key, 'x'.)"]  # fmt: skip


def test_a_resume_failure_is_recognised_from_the_log(tmp_path):
    checkpoint = tmp_path / "checkpoint-20"
    tail = ["[INFO:swift] loading", "_pickle.UnpicklingError: invalid load key, 'x'.", "[rank0]: done"]
    assert resume_failure(tail, checkpoint) == "_pickle.UnpicklingError: invalid load key, 'x'."
    assert resume_failure(["ValueError: bad learning rate"], checkpoint) is None
    assert resume_failure([f"FileNotFoundError: {checkpoint}/optimizer.pt"], checkpoint) is not None


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
        ("[rank1]: RuntimeError: Error building extension 'deepspeed_shm_comm': [1/3] c++ -MMD", Reason.CONFIG_ERROR),
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
    assert progress_status(record.wire())["summary"] == "2/4 (50%)"
    assert not record.finished
    with path.open("a") as handle:
        handle.write(json.dumps({"train_runtime": 3.0, "global_step/max_steps": "4/4"}) + "\n")
    assert tracker.poll().finished


def test_progress_server_serves_json_and_prometheus(tmp_path):
    path = tmp_path / "logging.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in LOG))
    server_tracker = ProgressTracker(path)
    server = ProgressServer(server_tracker, port=0, host="127.0.0.1").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        progress = json.loads(urllib.request.urlopen(f"{base}/progress", timeout=5).read())
        assert (progress["step"], progress["total_steps"], progress["summary"]) == (2, 4, "2/4 (50%)")
        assert progress["latest_checkpoint"] is None
        server_tracker.set_checkpoint("/out/run/checkpoint-2")
        progress = json.loads(urllib.request.urlopen(f"{base}/progress", timeout=5).read())
        assert progress["latest_checkpoint"] == "/out/run/checkpoint-2"
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "modelforge_train_step 2.0" in metrics and "modelforge_train_loss 7.1" in metrics
        assert "# TYPE modelforge_train_total_steps gauge" in metrics
    finally:
        server.stop()


def test_prometheus_text_skips_unknown_values_and_carries_the_evaluation():
    tracker = ProgressTracker(Path("/nonexistent"))
    assert prometheus_text(tracker.poll()) == ""
    evaluation = {"metrics": [{"name": "rougeL", "base": 12.5, "tuned": 40.0}, {"name": "bleu", "tuned": 3.0}]}
    text = prometheus_text(tracker.poll(), evaluation)
    assert 'modelforge_evaluation_score{metric="rougeL",model="base"} 12.5' in text
    assert 'modelforge_evaluation_score{metric="rougeL",model="tuned"} 40.0' in text
    assert 'modelforge_evaluation_score{metric="bleu",model="tuned"} 3.0' in text and 'model="base"} 3' not in text


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


def loss_lines(steps: range, total: int, loss=lambda step: 10.0 / step) -> str:
    return "".join(json.dumps({"loss": loss(step), "global_step/max_steps": f"{step}/{total}"}) + "\n"
                   for step in steps)  # fmt: skip


def tracker_history(tracker: ProgressTracker) -> list[float] | None:
    return tracker.poll().loss_history


def test_progress_tracker_keeps_the_loss_curve_downsampled(tmp_path: Path) -> None:
    path = tmp_path / "logging.jsonl"
    path.write_text(loss_lines(range(1, 2), 100))
    assert tracker_history(ProgressTracker(path)) == [10.0]  # one point: itself
    tracker = ProgressTracker(path)
    path.write_text(loss_lines(range(1, 101), 100) + json.dumps({"eval_loss": 0.5, "global_step/max_steps": "100/100"})
                    + "\n")  # fmt: skip
    record = tracker.poll()
    history = record.loss_history
    assert history is not None and len(history) == 32
    assert history[0] == pytest.approx((10.0 + 5.0 + 10.0 / 3) / 3, rel=1e-3)  # 100 points: the first bucket is 3
    assert history[-1] == pytest.approx(sum(10.0 / s for s in range(97, 101)) / 4, rel=1e-3)  # the last 4
    assert history == sorted(history, reverse=True)  # a falling curve stays one
    assert all(v == float(f"{v:.4g}") for v in history)  # 4 significant digits
    # The copies handed out are the caller's: changing one changes neither the tracker nor the next copy.
    history.clear()
    assert len(tracker.snapshot().loss_history or []) == 32 and len(tracker.poll().loss_history or []) == 32
    # Only new points recompute it: a poll with nothing new keeps the list it had.
    cached = tracker.record.loss_history
    tracker.poll()
    assert tracker.record.loss_history is cached


def test_a_long_run_keeps_a_bounded_loss_curve(tmp_path: Path) -> None:
    """Logging every step for 10,000 steps: the points held stay at most LOSS_POINTS_KEPT, the curve
    still spans the whole run."""
    path = tmp_path / "logging.jsonl"
    path.write_text(loss_lines(range(1, 10_001), 10_000, loss=lambda step: 1000.0 / step))
    tracker = ProgressTracker(path)
    history = tracker.poll().loss_history or []
    assert len(tracker._losses) <= LOSS_POINTS_KEPT and len(history) == 32
    assert tracker._losses[0][0] == 1 and tracker._losses[-1][0] > 9_990  # from the first step to the last
    # Evenly wide points: old and new ones alike cover about `stride` steps (so the sparkline's x is steps).
    gaps = {b[0] - a[0] for a, b in zip(tracker._losses, tracker._losses[1:], strict=False)}
    assert tracker._stride == 4 and max(gaps) == 4 and min(gaps) >= 2, (tracker._stride, gaps)
    assert history == sorted(history, reverse=True) and history[-1] == pytest.approx(1000.0 / 9844, rel=0.02)


def test_a_resume_from_an_earlier_step_truncates_the_loss_curve(tmp_path: Path) -> None:
    """A resumed run appends to the same log; one from checkpoint-5 after step 8 redoes steps 6.. ."""
    path = tmp_path / "logging.jsonl"
    path.write_text(loss_lines(range(1, 9), 10, loss=lambda step: float(step)))
    tracker = ProgressTracker(path)
    assert tracker_history(tracker) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    with path.open("a") as handle:  # the attempt after the restart: history includes the earlier one's
        handle.write(loss_lines(range(6, 11), 10, loss=lambda step: step / 10))
    assert tracker_history(tracker) == [1.0, 2.0, 3.0, 4.0, 5.0, 0.6, 0.7, 0.8, 0.9, 1.0]
    # A non-finite loss is still the latest loss, but the curve cannot draw it.
    with path.open("a") as handle:
        handle.write('{"loss": NaN, "global_step/max_steps": "11/12"}\n')
    record = tracker.poll()
    assert record.loss != record.loss and record.loss_history == [1.0, 2.0, 3.0, 4.0, 5.0, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_progress_json_and_status_carry_the_loss_history(tmp_path: Path) -> None:
    path = tmp_path / "logging.jsonl"
    path.write_text(loss_lines(range(1, 41), 40))
    tracker = ProgressTracker(path)
    status = progress_status(tracker.poll().wire())
    assert len(status["lossHistory"]) == 32  # 40 points: the last bucket is steps 39 and 40
    assert status["lossHistory"][-1] == pytest.approx((10 / 39 + 10 / 40) / 2, rel=1e-3)
    assert progress_status(ProgressTracker(tmp_path / "none.jsonl").poll().wire()) is None
    server = ProgressServer(tracker, port=0, host="127.0.0.1").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        progress = json.loads(urllib.request.urlopen(f"{base}/progress", timeout=5).read())
        assert progress["loss_history"] == status["lossHistory"]
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "history" not in metrics and "modelforge_train_loss 0.25" in metrics
    finally:
        server.stop()


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


def test_the_rank_command_is_torchrun_with_the_specs_timeouts_for_a_gang():
    from modelforge.launcher.distributed import World, rank_command

    gang = rank_command(World(2, 1, 4, "sft-a1-0.sft-a1.ns.svc", 29500), "python", 8, 900, 1800, ["--x", "1"])
    assert gang[:3] == ["python", "-m", "torch.distributed.run"]
    joined = " ".join(gang)
    assert "--nproc_per_node 4 --nnodes 2 --node_rank 1 --master_addr sft-a1-0.sft-a1.ns.svc" in joined
    assert "--rdzv_conf timeout=900 --max_restarts 0" in joined  # no local restarts: the operator restarts the gang
    assert gang[gang.index("-m", 3):] == ["-m", "modelforge.launcher.rank", "--expect-world-size", "8",
                                          "--collective-timeout", "1800", "--backend", "gloo", "--",
                                          "--x", "1"]  # fmt: skip
    one = rank_command(World(1, 0, 1, None, 29500), "python", 1, 900, 1800, ["--x", "1"])
    assert one[:3] == ["python", "-m", "modelforge.launcher.rank"]


def test_a_rank_started_in_another_world_than_the_spec_says_fails_before_training(monkeypatch):
    from modelforge.launcher.rank import WorldMismatch, join_process_group

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(WorldMismatch, match=r"world of 1 process.*spec asks for 2"):
        join_process_group(2, 30)
    assert join_process_group(1, 30) == (0, 1)
    assert classify(["modelforge: world size mismatch: ..."], interrupted=False)[0] == Reason.CONFIG_ERROR


def test_the_stall_watchdog_judges_only_ranks_that_began(tmp_path):
    from modelforge.launcher.rank import StallWatchdog, write_heartbeat

    now = [1000.0]
    dog = StallWatchdog(tmp_path, range(2, 4), 60, clock=lambda: now[0])
    assert dog.check() is None  # nobody began: loading is not a stall
    write_heartbeat(tmp_path, 2, 40, "training")
    write_heartbeat(tmp_path, 5, 40, "training")  # another node's rank: not ours to judge
    now[0] = (json.loads((tmp_path / "rank-2.json").read_text())["time"]) + 61
    said = dog.check()
    assert said is not None and said.startswith("rank 2 finished no training step for 61 s (its last: step 40")
    assert "stallTimeoutSeconds is 60" in said
    assert StallWatchdog(tmp_path, range(2, 4), 0, clock=lambda: now[0]).check() is None  # 0: off
    write_heartbeat(tmp_path, 2, 40, "saving")  # a save may follow: three timeouts
    now[0] = json.loads((tmp_path / "rank-2.json").read_text())["time"] + 150
    assert dog.check() is None
    now[0] += 31
    assert dog.check() is not None
    write_heartbeat(tmp_path, 2, 160, "finished")  # after training: never judged
    now[0] += 10_000
    assert dog.check() is None


@pytest.mark.parametrize(("line", "reason"), [
    ("  traceback : Signal 9 (SIGKILL) received by PID 4242", Reason.RANK_FAILED),
    ("[rank0]: RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234",
     Reason.RANK_FAILED),
    ("[rank0]: RuntimeError: modelforge: replicas diverged: after training the ranks' weights differ",
     Reason.CONFIG_ERROR),
    ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.", Reason.RANK_FAILED),
])  # fmt: skip
def test_a_lost_rank_is_classified(line, reason):
    assert classify(["Traceback (most recent call last):", line], interrupted=False)[0] == reason


def test_an_unknown_failure_keeps_the_exception_line_not_torchruns_box():
    lines = ["[rank0]: AttributeError: module swift has no attribute cli", "=" * 60, "  error_file: <N/A>", "=" * 60]
    assert classify(lines, interrupted=False) == (Reason.UNKNOWN, [lines[0]])


def test_supervise_on_sigterm_gives_the_child_the_time_asked_then_stops_it():
    """The first SIGTERM calls on_terminate (the launcher asks the trainer to save) instead of forwarding it;
    a child still running when that time is up is stopped."""
    asked: list[int] = []

    def on_terminate(signum: int) -> float:
        asked.append(signum)
        return 0.5

    child = "import os, signal, time; time.sleep(0.5); os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)"
    started = time.monotonic()
    finished = supervise([sys.executable, "-c", child], env=dict(os.environ), sink=None, tick_seconds=0.05,
                         stop_grace=5, on_terminate=on_terminate)  # fmt: skip
    assert asked == [signal.SIGTERM]
    assert finished.interrupted and finished.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 30


def test_supervise_forwards_sigterm_when_there_is_nothing_to_save():
    child = "import os, signal, time; time.sleep(0.5); os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)"
    finished = supervise([sys.executable, "-c", child], env=dict(os.environ), sink=None, tick_seconds=0.05,
                         on_terminate=lambda signum: 0.0)  # fmt: skip
    assert finished.interrupted and finished.returncode == -signal.SIGTERM

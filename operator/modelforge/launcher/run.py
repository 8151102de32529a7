"""One training attempt, the same in a pod and in local mode: pre-flight, resume, train, merge, summarize."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..api.conditions import Reason
from ..api.evaluation import JUDGE_API_KEY_ENV
from ..api.finetunejob import FineTuneJobSpec, Method, ResumePolicy, Runtime
from ..api.redact import redact
from ..paths import PVC_ROOT, RUN_DIR, pod_path, split_uri
from ..plan.outputs import MERGED_DIR, output_paths
from ..plan.performance import switches
from ..plan.resolve import PlanError, resolve
from .argv import LaunchContext, build_sft_argv, quant_args
from .checkpoints import list_checkpoints, mark_bad, missing_parts, newest_complete, resume_failure, set_aside
from .dataset import FileReport, TokenCounter, check_file, is_local_source
from .devices import capabilities
from .distributed import EnvironmentError_, World, rank_command, ray_command
from .evaluate import EVAL_DIR, EvalFileError, EvalRow, Judge, evaluate, load_eval_rows, local_answerer
from .infer import LocalModel
from .media import media_env, media_root_for
from .outcome import Outcome, classify, failure, redact_outcome, secret_values, write_termination_message
from .plots import write_loss_plot
from .progress import ProgressRecord, ProgressServer, ProgressTracker
from .rank import HEARTBEAT_ENV, SAVED_ON_STOP, STOP_FILE, StallWatchdog
from .remote_code import TRUST_ENV, remote_code_problem
from .supervise import supervise

QUIET_ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
# When the model and every dataset are local, nothing may touch a hub: ms-swift otherwise retries it.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1",
}  # fmt: skip


# After SIGTERM the trainer gets this long to save a checkpoint and exit, inside the pod's
# terminationGracePeriodSeconds (120 s, render/settings.py): the rest is for stopping what is left (10 s) and
# the termination message. MODELFORGE_SAVE_GRACE_SECONDS sets it (0: stop at once, no save).
SAVE_GRACE_SECONDS = 90.0
SAVE_GRACE_ENV = "MODELFORGE_SAVE_GRACE_SECONDS"


class Terminated(Exception):
    """SIGTERM/SIGINT arrived while no child ran (pre-flight, between training and merge)."""

    def __init__(self, signum: int):
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@dataclass
class RunOptions:
    """Where and how one attempt runs; built by the pod entrypoint or by `modelforge run`."""

    name: str
    output_root: Path
    world: World
    local: bool
    base_dir: Path = Path(".")  # relative dataset/model paths (local mode) are relative to the spec file
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    device: str = "cpu"
    termination_log: Path | None = None
    progress_port: int | None = None
    output_uri: str | None = None  # pvc://claim/subPath that output_root is mounted from (for status)
    # Where the pod's claims are mounted (render mounts them at PVC_ROOT). Only a pod's program run outside
    # its container (tests/cluster) moves it, through MODELFORGE_PVC_ROOT.
    pvc_root: str = PVC_ROOT
    progress_host: str = "0.0.0.0"
    dry_run: bool = False
    sink: IO[str] | None = None  # where ms-swift's own output goes
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    on_progress: Callable[[ProgressRecord], None] | None = None
    python: str = sys.executable
    # distributed.runtime: ray: "local" starts a Ray instance here; "auto" joins KubeRay's (the RayJob's head)
    ray_address: str = "local"


@dataclass
class Prepared:
    argv: list[str]
    env: dict[str, str]
    reports: list[FileReport]
    resume_from: Path | None
    tokens_per_step: float | None
    notes: list[str]
    model: str = ""  # spec.model.source resolved (a path here, or a hub id)
    eval_rows: list[EvalRow] = field(default_factory=list)  # spec.evaluation's questions, read by pre-flight


class Stop(Exception):
    """Ends the attempt early with an outcome (pre-flight or configuration failure)."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome


def _resolve_source(source: str, opts: RunOptions, what: str) -> str:
    if split_uri(source):
        if opts.local:
            raise Stop(
                failure(Reason.CONFIG_ERROR, f"{what} {source!r} is on a cluster volume; in local mode use a path")
            )
        in_pod = pod_path(source)
        return opts.pvc_root + in_pod.removeprefix(PVC_ROOT) if in_pod.startswith(PVC_ROOT) else in_pod
    if is_local_source(source):
        path = Path(source).expanduser()
        return str(path if path.is_absolute() else (opts.base_dir / path).resolve())
    return source  # hub id or URL: ms-swift fetches it


def _media_root(spec: FineTuneJobSpec, opts: RunOptions) -> Path | None:
    """spec.multimodal.mediaRoot as a path here (a pvc:// URL where the pod mounts it), or None."""
    if spec.multimodal is None or not spec.multimodal.media_root:
        return None
    source = spec.multimodal.media_root
    if split_uri(source):
        return Path(_resolve_source(source, opts, "multimodal.mediaRoot"))
    path = Path(source).expanduser()
    return path if path.is_absolute() else (opts.base_dir / path).resolve()


def _token_counter(model: str) -> TokenCounter | None:
    """A fast token counter from the model's tokenizer.json, or None when the model is not local."""
    tokenizer_file = Path(model) / "tokenizer.json"
    if not tokenizer_file.exists():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    per_turn = 5  # ChatML: <|im_start|>role\n ... <|im_end|>\n

    def count(turns: list[dict[str, str]]) -> int:
        encoded = tokenizer.encode_batch([t["content"] for t in turns], add_special_tokens=False)
        return sum(len(e.ids) + per_turn for e in encoded)

    return count


def preflight(spec: FineTuneJobSpec, opts: RunOptions, model: str) -> tuple[list[str], list[str], list[FileReport]]:
    """Resolve dataset sources and check every local file; Stop with DataError when any is unusable."""
    counter = _token_counter(model)
    max_length = spec.hyperparameters.max_length
    train: list[str] = []
    val: list[str] = []
    reports: list[FileReport] = []
    groups = [(spec.datasets, train)]
    if spec.validation and spec.validation.datasets:
        groups.append((spec.validation.datasets, val))
    root = _media_root(spec, opts)
    for datasets, out in groups:
        for dataset in datasets:
            source = _resolve_source(dataset.source, opts, "dataset")
            out.append(source)
            if is_local_source(source):
                reports.append(
                    check_file(
                        Path(source),
                        fmt=dataset.format,
                        max_length=max_length,
                        count_tokens=counter,
                        media_root=root or media_root_for(None, [source]),
                    )
                )
            else:
                opts.say(f"dataset {source}: hub dataset, not checked before training (ms-swift downloads it)")
    for report in reports:
        for line in report.render():
            opts.say(line)
    bad = [r for r in reports if not r.ok]
    if bad:
        first = bad[0]
        where = f"{first.path}:{first.problems[0][0]}: {first.problems[0][1]}" if first.problems else first.path
        count = sum(len(r.problems) for r in bad)
        raise Stop(
            failure(
                Reason.DATA_ERROR,
                f"dataset pre-flight found {count} problem(s) in {len(bad)} file(s); first: {where}",
                decisive_lines=[line for r in bad for line in r.render()][:10],
            )
        )
    return train, val, reports


def preflight_evaluation(spec: FineTuneJobSpec, opts: RunOptions) -> list[EvalRow]:
    """spec.evaluation's files, every row read now (before any GPU time): DataError naming file:line."""
    if spec.evaluation is None:
        return []
    files = [(Path(_resolve_source(d.source, opts, "evaluation dataset")), d.samples) for d in spec.evaluation.datasets]
    try:
        rows = load_eval_rows(files)
    except EvalFileError as exc:
        raise Stop(
            failure(
                Reason.DATA_ERROR,
                f"evaluation pre-flight found {len(exc.problems)} problem(s); first: {exc.problems[0]}",
                decisive_lines=exc.problems[:10],
            )
        ) from None
    opts.say(f"evaluation: {len(rows)} question(s) with reference answers in {len(files)} file(s)")
    return rows


def prepare(spec: FineTuneJobSpec, opts: RunOptions) -> Prepared:
    """Everything before ms-swift starts. Raises Stop with a classified outcome on any problem."""
    notes: list[str] = []
    try:
        resolved = resolve(spec)
    except PlanError as exc:
        raise Stop(failure(Reason.CONFIG_ERROR, str(exc))) from exc
    notes += resolved.notes
    if not opts.local and resolved.world_size != opts.world.size:
        raise Stop(
            failure(
                Reason.CONFIG_ERROR,
                f"the spec asks for {resolved.world_size} GPU processes but the pod environment gives "
                f"{opts.world.describe()}",
            )
        )
    model = _resolve_source(spec.model.source, opts, "model")
    if is_local_source(model) and not Path(model).exists():
        raise Stop(failure(Reason.CONFIG_ERROR, f"spec.model.source: {model} does not exist"))
    if is_local_source(model) and (problem := remote_code_problem(Path(model), spec.model.trust_remote_code)):
        raise Stop(failure(Reason.CONFIG_ERROR, problem))
    train, val, reports = preflight(spec, opts, model)
    eval_rows = preflight_evaluation(spec, opts)

    run_dir = opts.output_root / RUN_DIR
    resume_from = None
    if spec.checkpointing.resume == ResumePolicy.AUTO:
        resume_from, skipped = newest_complete(run_dir)
        notes += skipped
        if skipped and opts.world.is_rank0_node:  # one node moves them (the volume is shared)
            notes += set_aside(run_dir, resume_from)
        if resume_from:
            notes.append(f"resuming from {resume_from.name}")
    caps = capabilities(opts.device)
    ctx = LaunchContext(model, tuple(train), tuple(val), str(run_dir), opts.device, str(resume_from or "") or None,
                        caps)  # fmt: skip
    argv = build_sft_argv(spec, resolved, ctx)
    applied = switches(spec, resolved.deepspeed, caps)
    notes.append("performance: " + (", ".join(s.describe() for s in applied) if applied else "ms-swift defaults"))
    all_local = all(is_local_source(s) for s in (model, *train, *val))
    # Under Ray, Ray Train sets each worker's RANK/WORLD_SIZE/MASTER_*: torchrun's variables must not leak in.
    world_env = {} if spec.distributed.runtime == Runtime.RAY else opts.world.swift_env()
    env = {**opts.env, **QUIET_ENV, **(OFFLINE_ENV if all_local else {}), **world_env}
    env[TRUST_ENV] = "1" if spec.model.trust_remote_code else "0"  # what the pod's env says (render/training.py)
    if spec.multimodal:
        env.update(media_env(_media_root(spec, opts) or media_root_for(None, train)))
    for key in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR"):
        if key not in world_env:
            env.pop(key, None)  # a single process must not start torchrun
    means = [r.mean_tokens for r in reports if r.mean_tokens]
    tokens_per_step = None
    if means:
        per_step = spec.hyperparameters.batch_size_per_device * resolved.gradient_accumulation * resolved.world_size
        tokens_per_step = sum(means) / len(means) * per_step
    return Prepared(argv, env, reports, resume_from, tokens_per_step, notes, model, eval_rows)


def _display(path: Path, opts: RunOptions) -> str:
    if opts.output_uri:
        try:
            return f"{opts.output_uri.rstrip('/')}/{path.relative_to(opts.output_root)}"
        except ValueError:
            pass
    return str(path)


def _outputs(spec: FineTuneJobSpec, last: Path | None, merged: Path | None, opts: RunOptions) -> dict[str, str]:
    root = opts.output_uri.rstrip("/") if opts.output_uri else str(opts.output_root)
    return output_paths(root, spec, last.name if last is not None else None, merged is not None)


def merge_adapter(checkpoint: Path, opts: RunOptions, env: Mapping[str, str]) -> Path:
    """`swift export --merge_lora` into <output_root>/merged (a fixed path that serving can rely on)."""
    target = opts.output_root / MERGED_DIR
    argv = [opts.python, "-m", "modelforge.launcher.remote_code", "export", "--adapters", str(checkpoint),
            "--merge_lora", "true"]  # fmt: skip
    argv += ["--output_dir", str(target), "--exist_ok", "true"]
    opts.say(f"merging the adapter of {checkpoint.name} into the base model -> {target}")
    finished = supervise(argv, env=env, sink=opts.sink)
    if finished.returncode != 0:
        reason, lines = classify(finished.tail, interrupted=finished.interrupted)
        raise Stop(failure(reason, f"LoRA merge failed (exit {finished.returncode})", decisive_lines=lines))
    return target


def run_attempt(spec: FineTuneJobSpec, opts: RunOptions) -> Outcome:
    """Run one attempt end to end and return its outcome (also written to the termination log)."""
    previous = {}
    stage = ["before training (pre-flight); nothing was lost"]  # what a signal outside supervise() interrupts
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):  # supervise() has its own while a child runs
            previous[signum] = signal.signal(signum, _raise_terminated)
    cleanup: list[Callable[[], None]] = []
    try:
        opts.say(f"modelforge launcher: job {opts.name}, {opts.world.describe()}, device {opts.device}")
        outcome = _attempt(spec, opts, stage, cleanup)
    except Stop as stop:
        outcome = stop.outcome
    except EnvironmentError_ as exc:
        outcome = failure(Reason.CONFIG_ERROR, str(exc))
    except Terminated as term:
        name = signal.Signals(term.signum).name
        outcome = failure(Reason.INTERRUPTED, f"stopped by {name} {stage[0]}")
    except Exception as exc:  # a bug of ours (or MemoryError): still a classified outcome, never a traceback
        outcome = failure(Reason.UNKNOWN, f"internal error {stage[0]}: {_where(exc)}; report it with this line")
    finally:
        for release in cleanup:
            release()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    said = redact_outcome(outcome, secret_values(opts.env))  # the log is read by people, as status is
    opts.say(f"outcome: {said.outcome} ({said.reason}): {said.message}")
    if opts.termination_log is not None:
        write_termination_message(outcome, opts.termination_log)
    return outcome


def _where(exc: BaseException) -> str:
    """`Type: message (at file.py:line)` of the innermost frame: enough to report, not a traceback."""
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {Path(frame[0].filename).name}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {str(exc)[:300]}{at}"


def _save_grace(env: Mapping[str, str]) -> float:
    try:
        grace = float(env.get(SAVE_GRACE_ENV, SAVE_GRACE_SECONDS))
    except ValueError:
        return SAVE_GRACE_SECONDS
    return max(0.0, grace) if math.isfinite(grace) else SAVE_GRACE_SECONDS  # nan would never time out


def _write_seconds(checkpoint: Path) -> float | None:
    """How long a checkpoint took to write: its first file's mtime to its last (the save's duration, less
    the time to open the first file)."""
    try:
        times = [p.stat().st_mtime for p in checkpoint.rglob("*") if p.is_file()]
    except OSError:
        return None
    return max(times) - min(times) if times else None


class NewestCheckpoint:
    """The newest whole checkpoint of a run directory, checked as they appear (each whole one once)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.whole: set[str] = set()

    def find(self) -> Path | None:
        for path in reversed(list_checkpoints(self.run_dir)):
            if path.name in self.whole and not (path / ".modelforge-bad").exists():
                return path
            if not missing_parts(path):
                self.whole.add(path.name)
                return path
        return None


def _attempt(spec: FineTuneJobSpec, opts: RunOptions, stage: list[str], cleanup: list[Callable[[], None]]) -> Outcome:
    started = time.monotonic()
    prepared = prepare(spec, opts)
    preflight_seconds = round(time.monotonic() - started, 2)
    for note in prepared.notes:
        opts.say(note)
    world = opts.world
    # The world the ranks must join: in a pod prepare() checked it is the spec's; locally, local_world's.
    timeouts = spec.distributed
    ray = spec.distributed.runtime == Runtime.RAY
    if ray:
        storage = str(opts.output_root / ".ray-train")
        # The worker group's start stands in for the rendezvous: its timeout is the spec's rendezvous timeout.
        command = ray_command(world, opts.python, timeouts.collective_timeout_seconds, prepared.argv, storage,
                              opts.ray_address, opts.device == "cuda", timeouts.rendezvous_timeout_seconds)  # fmt: skip
    else:
        command = rank_command(world, opts.python, world.size, timeouts.rendezvous_timeout_seconds,
                               timeouts.collective_timeout_seconds, prepared.argv,
                               "nccl" if opts.device == "cuda" else "gloo")  # fmt: skip
    if opts.dry_run:
        opts.say("dry run: would run " + " ".join(command))
        return Outcome("Succeeded", "DryRun", "pre-flight passed; nothing was trained (--dry-run)")

    run_dir = opts.output_root / RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = ProgressTracker(
        run_dir / "logging.jsonl",
        prepared.tokens_per_step,
        started=started,
        gpus=world.size,  # per GPU; per process on CPUs
        preflight_seconds=preflight_seconds,
    )
    tracker.poll()  # a resumed run appends: start from what is already there
    tracker.mark_start()  # ...and its SLIs count from this attempt's first step
    tracker.set_resumed_from(_display(prepared.resume_from, opts) if prepared.resume_from else None)
    if opts.progress_port is not None and opts.world.is_rank0_node:
        server = ProgressServer(tracker, opts.progress_port, opts.progress_host).start()
        cleanup.append(server.stop)  # it answers until the attempt ends (the evaluation included)
        opts.say(f"progress: http://{opts.progress_host}:{server.port}/progress and /metrics")

    if ray:
        # Ray's workers may be in other pods: their heartbeats go to the output volume, the driver watches all.
        heartbeats = opts.output_root / ".heartbeats"
        shutil.rmtree(heartbeats, ignore_errors=True)
        heartbeats.mkdir(parents=True)
        ranks = range(world.size)
    else:
        heartbeats = Path(tempfile.mkdtemp(prefix="modelforge-heartbeat-"))
        first = world.node_rank * world.nproc_per_node
        ranks = range(first, first + world.nproc_per_node)
    watchdog = StallWatchdog(heartbeats, ranks, spec.failure_policy.stall_timeout_seconds)
    newest = NewestCheckpoint(run_dir)

    def tick() -> str | None:
        found = newest.find()
        tracker.set_checkpoint(_display(found, opts) if found else None, _write_seconds(found) if found else None)
        record = tracker.poll()
        if opts.on_progress is not None:
            opts.on_progress(record)
        return watchdog.check()

    grace = _save_grace(opts.env)

    def on_terminate(signum: int) -> float:
        """SIGTERM while training: ask the ranks to save at their next step and stop, within the grace."""
        name = signal.Signals(signum).name
        if grace <= 0 or not any(heartbeats.glob("rank-*.json")):
            opts.say(f"{name}: stopping the trainer (training had not begun: nothing to save)")
            return 0.0
        (heartbeats / STOP_FILE).touch()
        opts.say(f"{name}: asking the trainer to save a checkpoint at its next step and stop (up to {grace:.0f} s)")
        return grace

    try:
        finished = supervise(command, env={**prepared.env, HEARTBEAT_ENV: str(heartbeats)}, sink=opts.sink,
                             tick=tick, on_terminate=on_terminate)  # fmt: skip
    finally:
        began = any(heartbeats.glob("rank-*.json"))  # a rank reached training: its checkpoint had loaded
        shutil.rmtree(heartbeats, ignore_errors=True)
    stage[0] = "after training, before the outcome or the merge; the newest whole checkpoint is kept"
    record = tracker.poll()
    checkpoints = list_checkpoints(run_dir)
    last = next((c for c in reversed(checkpoints) if not missing_parts(c)), None)
    last_checkpoint = _display(last, opts) if last else None
    if finished.stopped is not None:
        opts.say(f"watchdog: {finished.stopped}")
        return failure(
            Reason.STALLED, finished.stopped, exit_code=finished.returncode,
            last_step=record.step, total_steps=record.total_steps, last_checkpoint=last_checkpoint,
        )  # fmt: skip
    saved = any(SAVED_ON_STOP in line for line in finished.tail)
    if finished.interrupted or saved:
        # saved without a signal here: another node was asked to stop, and every rank stopped with it
        how = "a signal" if finished.interrupted else "a signal to another node"
        message = f"swift sft stopped by {how} (exit {finished.returncode})"
        if saved and last is not None:
            message = f"stopped by {how} after saving {last.name}: the next attempt resumes there"
        return failure(
            Reason.INTERRUPTED, message, exit_code=finished.returncode,
            last_step=record.step, total_steps=record.total_steps, last_checkpoint=last_checkpoint,
        )  # fmt: skip
    if finished.returncode != 0:
        reason, lines = classify(finished.tail, interrupted=False)
        message = f"swift sft exited with code {finished.returncode}"
        if lines:
            message += f": {lines[-1].strip()[:300]}"
        outcome = failure(
            reason, message, decisive_lines=lines, exit_code=finished.returncode,
            last_step=record.step, total_steps=record.total_steps, last_checkpoint=last_checkpoint,
        )  # fmt: skip
        resumed = prepared.resume_from
        why = resume_failure(finished.tail, resumed) if resumed is not None and not began else None
        if resumed is not None and why is not None:
            # It failed loading the checkpoint, before any step: that checkpoint is bad, not the job.
            mark_bad(resumed, f"resuming from it failed: {why}")
            opts.say(f"marked {resumed.name} bad ({resumed / '.modelforge-bad'}): resuming from it failed: {why}")
            outcome.message = f"resuming from {resumed.name} failed ({why}); it is marked bad, the next attempt " \
                              "resumes from the checkpoint before it"  # fmt: skip
            outcome.retryable = True
        return outcome

    merged = None
    if spec.output and spec.output.merge and spec.method != Method.FULL and last is not None:
        merged = merge_adapter(last, opts, prepared.env)
    outputs = _outputs(spec, last, merged, opts)
    if opts.world.is_rank0_node:
        plot, why_not = write_loss_plot(run_dir / "logging.jsonl", opts.output_root / "plots" / "loss.png")
        if plot is not None:
            outputs["lossPlot"] = _display(plot, opts)
            opts.say(f"loss curve: {plot}")
        else:
            opts.say(why_not)
    evaluation = None
    if spec.evaluation is not None and opts.world.is_rank0_node and last is not None:
        stage[0] = "during the evaluation, after training; the trained model is kept"
        try:
            evaluation = _evaluate(spec, opts, prepared, last, merged, record.eval_loss)
        except Terminated:
            raise
        except Exception as exc:  # an evaluation never fails (or retrains) a job whose training succeeded
            evaluation = {"error": redact(f"the evaluation failed: {_where(exc)}", secret_values(opts.env))}
            opts.say(evaluation["error"])
        tracker.set_evaluation(evaluation)  # /metrics carries the scores while the pod ends
    return Outcome(
        "Succeeded",
        Reason.COMPLETED.value,
        f"trained {record.step or 0} step(s)" + (f", final loss {record.loss:.4g}" if record.loss is not None else ""),
        exit_code=0,
        outputs=outputs,
        last_step=record.step,
        total_steps=record.total_steps,
        last_checkpoint=last_checkpoint,
        evaluation=evaluation or {},
    )


def tuned_model(spec: FineTuneJobSpec, base: str, last: Path, merged: Path | None) -> LocalModel:
    """What the job produced, as `swift infer` loads it: the merged model, the full checkpoint, or base + adapter."""
    model_type, template = spec.model.model_type, spec.model.template
    trust, quant = spec.model.trust_remote_code, tuple(quant_args(spec))
    if merged is not None:
        return LocalModel(str(merged), None, model_type, template, trust, quant)
    if spec.method == Method.FULL:
        return LocalModel(str(last), None, model_type, template, trust)
    return LocalModel(base, str(last), model_type, template, trust, quant)


def _evaluate(
    spec: FineTuneJobSpec, opts: RunOptions, prepared: Prepared, last: Path, merged: Path | None,
    eval_loss: float | None,
) -> dict[str, Any]:  # fmt: skip
    """spec.evaluation on rank 0 after training: the measurement for the outcome (the operator judges it)."""
    assert spec.evaluation is not None
    evaluation = spec.evaluation
    env = dict(prepared.env)
    tokens = evaluation.max_new_tokens
    tuned = local_answerer(tuned_model(spec, prepared.model, last, merged), max_new_tokens=tokens, env=env,
                           sink=opts.sink)  # fmt: skip
    base_model = LocalModel(prepared.model, None, spec.model.model_type, spec.model.template,
                            spec.model.trust_remote_code, tuple(quant_args(spec)))  # fmt: skip
    base = local_answerer(base_model, max_new_tokens=tokens, env=env, sink=opts.sink) if evaluation.baseline else None
    judge = None
    if evaluation.judge is not None:  # its key: the Secret's value in the pod's env (render/training.py)
        judge = Judge(evaluation.judge.endpoint, evaluation.judge.model, opts.env.get(JUDGE_API_KEY_ENV) or None)
    secrets = secret_values(opts.env)  # an endpoint's words (the judge's) may echo anything: never a key in a log

    def say(line: str) -> None:
        opts.say(redact(line, secrets))

    result = evaluate(evaluation, prepared.eval_rows, tuned, base, opts.output_root / EVAL_DIR, eval_loss=eval_loss,
                      display=lambda path: _display(path, opts), say=say, rater=judge,
                      scrub=lambda text: redact(text, secrets))  # fmt: skip
    return result.status.to_wire()  # judged here for `modelforge run`; the pod's message carries the measured part

"""The GPU benchmark's steps in sequence, each in its own process with its own time limit; one table at the end.

Run through bench/gpu/run.sh (it installs the carried wheels first), not directly. Steps:
  preflight   import everything the GPU path needs from the carried wheels; versions and device
  build       a random Qwen3 (8B shape on the GPU, tiny with --rehearse) and chats of 60-100 % of maxLength
  plan        `modelforge plan` on the four FineTuneJob specs below (the output goes into the report)
  baseline    transformers.Trainer + peft, LoRA r16 all-linear, batch 4, gradient checkpointing
  auto-b4     `modelforge run`, performance: auto, the same LoRA and batch (what a training pod runs)
  auto-b16    the same at batch 16
  qlora-r64-b1  the QLoRA seed case (nf4, double quant, r64, batch 1), performance: auto
  stock-b4    `modelforge run`, performance: none (ms-swift's defaults), LoRA r16 batch 4
A step that fails or runs out of time is reported with its reason and the next one still runs; the whole
call stops before --deadline. Every launcher row's peak memory is checked against the planner's estimate
for the same spec. Results go to --out as gpu-bench.json, gpu-bench.md and gpu-bench-logs.tar.gz, rewritten
after every step so a call cut short still returns what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from workload import Run, finetunejob, flops_per_token

HERE = Path(__file__).resolve().parent
GIB = 2**30
PEAK_TFLOPS = 790.0  # H200, bf16 dense: 8192^3 matmul measured at ~788 TFLOP/s on the lent machine
GPU_MEMORY = "140Gi"  # H200: 143,771 MiB
RESERVE_S = 10  # kept back from the deadline to write the report
GOAL = 2.0  # issue 17: performance: auto >= 2x the transformers+peft baseline's tokens/s


@dataclass(frozen=True)
class Mode:
    shape: str
    device: str
    seq: int
    rows: int
    baseline_steps: int
    baseline_skip: int
    runs: tuple[Run, ...]
    budgets: dict[str, int]  # seconds per step (the deadline can cut them shorter)


GPU = Mode(
    shape="qwen3-8b", device="cuda", seq=1024, rows=256, baseline_steps=25, baseline_skip=5,
    runs=(
        Run("auto-b4", "launcher, performance: auto, LoRA r16, batch 4", "lora", 16, 4, "auto", 25, 5),
        Run("auto-b16", "launcher, performance: auto, LoRA r16, batch 16", "lora", 16, 16, "auto", 10, 4),
        Run("qlora-r64-b1", "launcher, performance: auto, QLoRA r64, batch 1", "qlora", 64, 1, "auto", 10, 4),
        Run("stock-b4", "launcher, performance: none, LoRA r16, batch 4", "lora", 16, 4, "none", 15, 5),
    ),
    budgets={"preflight": 60, "build": 180, "plan": 45, "baseline": 110, "auto-b4": 130, "auto-b16": 100,
             "qlora-r64-b1": 110, "stock-b4": 90},
)  # fmt: skip
REHEARSE = Mode(
    shape="tiny", device="cpu", seq=128, rows=64, baseline_steps=6, baseline_skip=2,
    runs=tuple(Run(r.name, r.title, r.method, r.rank, r.batch, r.performance, 4 if r.batch < 16 else 3, 1)
               for r in GPU.runs),
    budgets=dict.fromkeys(GPU.budgets, 150),
)  # fmt: skip


@dataclass
class Step:
    name: str
    status: str = "not run"  # ok | failed | timed out | not run | interrupted
    seconds: float = 0.0
    timeout_s: float = 0.0
    reason: str = ""
    tail: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, mode: Mode, work: Path, out: Path | None, deadline: float, rehearse: bool):
        self.mode, self.work, self.out, self.deadline, self.rehearse = mode, work, out, deadline, rehearse
        self.logs = work / "logs"
        self.steps: list[Step] = []
        self.rows: list[dict[str, Any]] = []
        self.machine: dict[str, Any] = {}
        self.built: dict[str, Any] = {}
        self.plan_text = ""
        self.started = datetime.now(UTC).isoformat(timespec="seconds")

    # -- running one step ------------------------------------------------------------------------------------
    def env(self, probe: Path | None = None) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.mode.device == "cuda":
            env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # the launcher counts GPUs; one process on GPU 0
        if probe is not None:
            shutil.rmtree(probe, ignore_errors=True)  # only this step's processes count
            probe.mkdir(parents=True)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE / "probe"), env.get("PYTHONPATH")]))
            env["MODELFORGE_BENCH_PROBE"] = str(probe)
        return env

    def run(self, name: str, argv: list[str], env: dict[str, str]) -> Step:
        """Run one step's process tree with its time limit; a step that hangs is killed, tree and all."""
        step = Step(name)
        self.steps.append(step)
        left = self.deadline - time.time() - RESERVE_S
        step.timeout_s = max(0, round(min(self.mode.budgets[name], left)))
        if step.timeout_s < 15:
            step.reason = f"no time left before the call's deadline ({max(0, round(left))} s)"
            print(f"== {name}: not run: {step.reason}", flush=True)
            return step
        print(f"== {name} (limit {step.timeout_s} s)", flush=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        started = time.monotonic()
        with log.open("w") as sink:
            process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = process.wait(timeout=step.timeout_s)
            except subprocess.TimeoutExpired:
                kill_tree(process)
                code = None
            except BaseException:  # SIGTERM from run.sh's backstop, ^C: leave no trainer behind
                kill_tree(process)
                step.status, step.reason = "interrupted", "bench.py was stopped"
                raise
        step.seconds = round(time.monotonic() - started, 1)
        lines = log.read_text(errors="replace").splitlines()
        step.tail = lines[-30:]
        if code is None:
            step.status, step.reason = "timed out", f"killed after {step.timeout_s} s"
        elif code != 0:
            step.status, step.reason = "failed", f"exit {code}: {last_error(lines)}"
        else:
            step.status = "ok"
        print(f"   {step.status} in {step.seconds} s" + (f": {step.reason}" if step.reason else ""), flush=True)
        if step.status != "ok":
            print("   " + "\n   ".join(step.tail[-15:]), flush=True)
        return step

    def step_script(self, name: str, *args: str, probe: bool = False) -> tuple[Step, dict[str, Any]]:
        result = self.work / f"{name}.json"
        result.unlink(missing_ok=True)
        argv = [sys.executable, str(HERE / "steps.py"), name, "--result", str(result), *args]
        step = self.run(name, argv, self.env(self.work / "probe" / name if probe else None))
        if step.status == "ok" and not result.exists():
            step.status, step.reason = "failed", f"exit 0 but no result in {result}"
        return step, json.loads(result.read_text()) if step.status == "ok" else {}

    def skip(self, name: str, reason: str) -> None:
        self.steps.append(Step(name, reason=reason))
        print(f"== {name}: not run: {reason}", flush=True)

    # -- the benchmark -----------------------------------------------------------------------------------------
    def main(self) -> int:
        mode = self.mode
        step, self.machine = self.step_script("preflight")
        self.save()
        step, self.built = self.step_script("build", "--shape", mode.shape, "--device", mode.device,
                                            "--work", str(self.work), "--rows", str(mode.rows),
                                            "--seq", str(mode.seq))  # fmt: skip
        self.save()
        if step.status != "ok":
            for name in ["plan", "baseline", *(r.name for r in mode.runs)]:
                self.skip(name, "build failed: no model")
            self.save()
            return 1
        model, data = Path(self.built["model"]), Path(self.built["data"])
        specs = {}
        for r in mode.runs:
            specs[r.name] = self.work / "specs" / f"{r.name}.yaml"
            specs[r.name].parent.mkdir(parents=True, exist_ok=True)
            specs[r.name].write_text(yaml.safe_dump(finetunejob(r, model, data, mode.seq), sort_keys=False))
        self.plan_cli(list(specs.values()))
        self.save()
        self.baseline(model, data)
        self.save()
        for r in mode.runs:
            self.launcher(r, specs[r.name], model)
            self.save()
        self.print_table()
        return 0 if all(s.status == "ok" for s in self.steps) else 1

    def plan_cli(self, specs: list[Path]) -> None:
        """`modelforge plan` as a person runs it: its text goes into the report beside the measurements."""
        argv = [sys.executable, "-m", "modelforge.cli", "plan", *map(str, specs), "--gpu-memory", GPU_MEMORY,
                "--tflops", str(PEAK_TFLOPS)]  # fmt: skip
        step = self.run("plan", argv, self.env())
        self.plan_text = (self.logs / "plan.log").read_text(errors="replace") if step.status != "not run" else ""

    def baseline(self, model: Path, data: Path) -> None:
        mode = self.mode
        step, result = self.step_script("baseline", "--model", str(model), "--data", str(data), "--device",
                                        mode.device, "--batch", "4", "--seq", str(mode.seq), "--rank", "16",
                                        "--steps", str(mode.baseline_steps), "--skip", str(mode.baseline_skip),
                                        probe=True)  # fmt: skip
        row = self.row("baseline", "transformers+peft Trainer (baseline), LoRA r16, batch 4", step)
        if step.status == "ok":
            self.timing(row, result["step_seconds"], result["tokens_per_step"], model, 16)
            self.memory(row, self.work / "probe" / "baseline")

    def launcher(self, run: Run, spec: Path, model: Path) -> None:
        output = self.work / "runs" / run.name
        shutil.rmtree(output, ignore_errors=True)  # a resumed run would time other steps
        probe = self.work / "probe" / run.name
        argv = [sys.executable, "-m", "modelforge.cli", "run", str(spec), "--output", str(output)]
        step = self.run(run.name, argv, self.env(probe))
        row = self.row(run.name, run.title, step)
        try:
            row["planner_gib"] = round(planner_gib(spec, self.mode.device), 2)
        except Exception as exc:  # reported in the row; the other runs still go on
            row["planner_gib"] = None
            row["status"] += f"; planner: {exc}"
        train_log = output / "train.log"
        if train_log.exists():
            (self.logs / f"{run.name}.train.log").write_text(train_log.read_text(errors="replace"))
        if step.status != "ok":
            return
        try:
            self.launcher_results(run, output, probe, model, row)
        except (OSError, ValueError, KeyError) as exc:  # exit 0 but no usable log: a failed step all the same
            step.status, step.reason = "failed", f"results unreadable: {exc!r}"[:300]
            row["status"] = f"failed: {step.reason}"

    def launcher_results(self, run: Run, output: Path, probe: Path, model: Path, row: dict[str, Any]) -> None:
        log = [json.loads(line) for line in (output / "run" / "logging.jsonl").read_text().splitlines() if line.strip()]
        records = [r for r in log if "train_speed(s/it)" in r and "/" in str(r.get("global_step/max_steps", ""))]
        # ms-swift logs the mean s/it since training began: elapsed at step n = mean_n * n.
        elapsed = [r["train_speed(s/it)"] * int(str(r["global_step/max_steps"]).split("/")[0]) for r in records]
        durations = [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)][run.skip :]
        if not durations:
            raise ValueError(f"logging.jsonl has {len(records)} step(s), not more than the {run.skip} skipped")
        mean_tokens = swift_mean_tokens(output / "train.log") or self.built["mean_tokens"]
        self.timing(row, durations, mean_tokens * run.batch, model, run.rank)
        self.memory(row, probe)
        swift_gib = [float(str(r["memory(GiB)"]).split()[0]) for r in log if "memory(GiB)" in r]
        row["swift_memory_gib"] = max(swift_gib) if swift_gib else None
        if row.get("peak_gib") and row.get("planner_gib"):
            row["planner_error_pct"] = round(100 * (row["planner_gib"] - row["peak_gib"]) / row["peak_gib"], 1)

    # -- measurements ------------------------------------------------------------------------------------------
    def row(self, name: str, title: str, step: Step) -> dict[str, Any]:
        status = "ok" if step.status == "ok" else f"{step.status}: {step.reason}"
        row: dict[str, Any] = {"run": name, "title": title, "status": status}
        self.rows.append(row)
        return row

    def timing(self, row: dict[str, Any], seconds: list[float], tokens_per_step: float, model: Path,
               rank: int) -> None:  # fmt: skip
        median = statistics.median(seconds)
        tokens_per_s = tokens_per_step / median
        flops = flops_per_token(model, tokens_per_step / self.batch_of(row), rank)
        row.update(tokens_per_s=round(tokens_per_s, 1), mfu=tokens_per_s * flops / (PEAK_TFLOPS * 1e12),
                   s_per_step=round(median, 4), s_per_step_min=round(min(seconds), 4),
                   s_per_step_max=round(max(seconds), 4), steps_timed=len(seconds),
                   tokens_per_step=round(tokens_per_step, 1))  # fmt: skip
        base = next((r for r in self.rows if r["run"] == "baseline" and r.get("tokens_per_s")), None)
        if base is not None and row["run"] != "baseline":
            row["vs_baseline"] = round(tokens_per_s / base["tokens_per_s"], 2)

    def batch_of(self, row: dict[str, Any]) -> int:
        return next((r.batch for r in self.mode.runs if r.name == row["run"]), 4)

    def memory(self, row: dict[str, Any], probe: Path) -> None:
        """GPU: peak allocated + CUDA context (what the planner estimates); CPU: peak RSS (not comparable)."""
        records = [json.loads(p.read_text()) for p in probe.glob("probe-*.json")]
        cuda = [r for r in records if "max_allocated_bytes" in r]
        if cuda:
            top = max(cuda, key=lambda r: r["max_allocated_bytes"])
            row["peak_gib"] = round((top["max_allocated_bytes"] + top["context_bytes"]) / GIB, 2)
            row["reserved_gib"] = round(top["max_reserved_bytes"] / GIB, 2)
            row["peak_kind"] = "allocated + CUDA context"
        elif records:
            row["peak_gib"] = round(max(r["max_rss_bytes"] for r in records) / GIB, 2)
            row["peak_kind"] = "process RSS (CPU)"
        else:
            row["peak_gib"] = None
            row["peak_kind"] = f"no probe record in {probe}"

    # -- the report --------------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {"mode": "rehearse (CPU, tiny shape)" if self.rehearse else "gpu", "started": self.started,
                "shape": self.mode.shape, "device": self.mode.device, "max_length": self.mode.seq,
                "peak_tflops": PEAK_TFLOPS, "goal_vs_baseline": GOAL, "machine": self.machine,
                "data": self.built, "steps": [asdict(s) for s in self.steps], "rows": self.rows,
                "plan_cli": self.plan_text}  # fmt: skip

    def save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu-bench.json").write_text(json.dumps(self.report(), indent=2) + "\n")
        (self.out / "gpu-bench.md").write_text(markdown(self.report()))
        if self.logs.exists():
            with tarfile.open(self.out / "gpu-bench-logs.tar.gz", "w:gz") as tar:
                tar.add(self.logs, arcname="logs")

    def print_table(self) -> None:
        print("\n" + "\n".join(table_lines(self.report())), flush=True)


def table_lines(report: dict[str, Any]) -> list[str]:
    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    out = [f"{report['mode']}: shape {report['shape']}, device {report['device']}, maxLength {report['max_length']},"
           f" MFU against {report['peak_tflops']:.0f} TFLOP/s; peak = "
           + ("allocated + CUDA context" if report["device"] == "cuda" else "process RSS (CPU: not comparable)"),
           "",
           "| run | tokens/s | vs baseline | MFU | s/step (min-max) | peak GiB | reserved GiB | planner GiB | error |"
           " status |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for r in report["rows"]:
        spread = f"{num(r.get('s_per_step'), '.3f')} ({num(r.get('s_per_step_min'), '.3f')}-" \
                 f"{num(r.get('s_per_step_max'), '.3f')})" if r.get("s_per_step") else "-"  # fmt: skip
        error = f"{r['planner_error_pct']:+.1f} %" if r.get("planner_error_pct") is not None else "-"
        out.append(f"| {r['title']} | {num(r.get('tokens_per_s'), ',.0f')} | {num(r.get('vs_baseline'), '.2f')}"
                   f" | {num(r.get('mfu'), '.2%')} | {spread} | {num(r.get('peak_gib'), '.2f')}"
                   f" | {num(r.get('reserved_gib'), '.2f')} | {num(r.get('planner_gib'), '.2f')} | {error}"
                   f" | {r['status']} |")  # fmt: skip
    auto = [r for r in report["rows"] if r["run"].startswith("auto-") and r.get("vs_baseline")]
    if auto:
        out += ["", "performance: auto against the transformers+peft baseline: "
                + ", ".join(f"{r['vs_baseline']:.2f}x at batch {r['run'].split('-b')[-1]}" for r in auto)
                + f" (goal >= {report['goal_vs_baseline']:g}x)"]  # fmt: skip
    out += ["", "| step | status | seconds | limit s | reason |", "| --- | --- | ---: | ---: | --- |"]
    out += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['timeout_s']} | {s['reason']} |"
            for s in report["steps"]]  # fmt: skip
    return out


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [f"# GPU benchmark ({report['mode']}), {report['started']}", ""]
    if machine:
        versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
        lines += [f"Device: {machine.get('device')} ({machine.get('device_memory_gib', 0):.0f} GiB), Python "
                  f"{machine.get('python')}; {versions}.", ""]  # fmt: skip
    lines += table_lines(report)
    if report["plan_cli"]:
        lines += ["", "## `modelforge plan` on the same specs", "",
                  "It plans for the trainer image (CUDA, Liger, flash-attn); the GPU machine has no flash-attn, so "
                  "padding-free is not applied there, which changes no memory term. The table's planner column "
                  "is the same estimate for the kernels this machine has.", "",
                  "```", report["plan_cli"].rstrip(), "```"]  # fmt: skip
    failed = [s for s in report["steps"] if s["status"] not in ("ok", "not run")]
    for s in failed:
        lines += ["", f"## {s['name']}: {s['status']}", "", "```", *s["tail"], "```"]
    return "\n".join(lines) + "\n"


def planner_gib(spec_path: Path, device: str) -> float:
    """The planner's estimate for this spec file, as `modelforge plan` computes it, for this machine's kernels."""
    from modelforge.launcher.devices import capabilities
    from modelforge.launcher.local import load_finetunejob
    from modelforge.plan.capacity import PlanSettings, plan
    from modelforge.plan.models import from_config

    spec = load_finetunejob(spec_path).spec
    arch = from_config(Path(spec.model.source))
    settings = PlanSettings(gpu_memory_gib=140, peak_tflops=PEAK_TFLOPS, capabilities=capabilities(device))
    result = plan(spec, arch, settings)
    if result.chosen is None:
        raise ValueError(f"{spec_path}: the planner made no estimate ({result.notes})")
    return result.chosen.estimate.gib()


def swift_mean_tokens(train_log: Path) -> float | None:
    """ms-swift's own count of the rows' tokens with its template ("Dataset Token Length: 812.3±...")."""
    if not train_log.exists():
        return None
    found = re.findall(r"Dataset Token Length: ([0-9.]+)±", train_log.read_text(errors="replace"))
    return float(found[0]) if found else None


def last_error(lines: list[str]) -> str:
    for line in reversed(lines):
        if re.search(r"(Error|Exception|error:|Killed|outcome: Failed)", line):
            return line.strip()[:300]
    return next((line.strip()[:300] for line in reversed(lines) if line.strip()), "no output")


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a step and every process under it (ms-swift starts its trainer in a session of its own)."""
    import psutil

    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    process.wait()


def stop(signum: int, _frame: object) -> None:
    raise SystemExit(f"bench.py: stopped by signal {signum} (run.sh's time limit); the report has what ran")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rehearse", action="store_true", help="tiny shape on the CPU (what CI runs)")
    parser.add_argument("--work", default="bench-gpu-work", help="model, data, runs and logs")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="where the report goes (default $OUT)")
    parser.add_argument("--deadline", type=float, help="Unix time by which everything has ended (default +450 s)")
    args = parser.parse_args()
    mode = REHEARSE if args.rehearse else GPU
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(mode, work, Path(args.out).resolve() if args.out else None, args.deadline or time.time() + 450,
                  args.rehearse)  # fmt: skip
    signal.signal(signal.SIGTERM, stop)
    try:
        return bench.main()
    finally:
        bench.save()


if __name__ == "__main__":
    sys.exit(main())

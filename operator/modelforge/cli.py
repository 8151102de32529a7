"""The `modelforge` command. Each subcommand is a thin shell over the pure layers."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from . import __version__
from .launcher.infer import LocalModel

Handler = Callable[[argparse.Namespace], int]


def cmd_crds(args: argparse.Namespace) -> int:
    from .generate import drifted, write_generated

    root = Path(args.root)
    if args.check:
        stale = drifted(root)
        for path in stale:
            print(f"{path}: out of date with operator/modelforge/api; run `modelforge crds` (or `make generate`)")
        if not stale:
            print("CRDs, the chart's CRDs and docs/api.md are up to date with operator/modelforge/api")
        return 1 if stale else 0
    for path in write_generated(root):
        print(f"wrote {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .api.validate import validate_document

    errors = 0
    for doc in _read_specs(args.files) or []:
        problems = validate_document(doc.data)
        for problem in problems:
            print(f"{doc.where(problem.path)}: {problem}", file=sys.stderr)
        errors += len(problems)
        if not problems:
            print(f"{doc.where()}: {doc.data['kind']} {doc.data['metadata']['name']} is valid")
    errors += _read_specs.problems
    if errors:
        print(f"{errors} problem(s) found", file=sys.stderr)
    return 1 if errors else 0


class _SpecReader:
    """Every command's way into spec files (modelforge.specfile): the documents a command handles, with the
    others skipped aloud and every unreadable file, stray document or empty file counted as a problem."""

    problems = 0

    def __call__(self, files: Sequence[str], kinds: tuple[str, ...] = ("FineTuneJob", "ModelServe")) -> list[Any]:
        from .specfile import SpecFileError, select

        self.problems = 0
        documents, nothing_ours = [], []
        for file in files:
            try:
                selection = select(Path(file), kinds)
            except SpecFileError as exc:
                print(exc, file=sys.stderr)
                self.problems += 1
                continue
            for note in selection.notes:
                print(f"note: {note}", file=sys.stderr)
            for problem in selection.problems:
                print(problem, file=sys.stderr)
            self.problems += len(selection.problems)
            documents += selection.ours
            nothing_ours += [selection] if selection.nothing_ours else []
        # Like `kubectl apply -f job.yaml pvc.yaml`: a file of other objects beside ours is fine (its objects
        # are noted as skipped above); an invocation with nothing of ours in any file has done nothing.
        for other in nothing_ours:
            if not documents:
                print(other.nothing_ours, file=sys.stderr)
            elif not other.skipped:  # an empty file beside ours (truncated, a wrong path): said, not passed over
                print(f"note: {other.nothing_ours}", file=sys.stderr)
        if not documents:
            self.problems += len(nothing_ours)
        return documents


_read_specs = _SpecReader()


def _parse_all(documents: list[Any]) -> list[tuple[Any, Any]] | None:
    """(document, parsed) for each document, or None after printing every problem at its file:line."""
    from .api.validate import SpecError, parse_resource

    parsed, failed = [], False
    for doc in documents:
        try:
            parsed.append((doc, parse_resource(doc.data)))
        except SpecError as exc:
            for problem in exc.problems:
                print(f"{doc.where(problem.path)}: {problem}", file=sys.stderr)
            failed = True
    return None if failed or _read_specs.problems else parsed


def cmd_render(args: argparse.Namespace) -> int:
    """Print the children the operator would create (GitOps review, dry run)."""
    import yaml

    from .render.manifests import PLACEHOLDER_UID, render_resource

    parsed = _parse_all(_read_specs(args.files))
    if parsed is None:
        return 1
    import os

    from .controller.config import ControllerConfig

    jobs = {p.name: p.spec for _, p in parsed if p.resource.kind == "FineTuneJob"}
    # The operator's settings come from MODELFORGE_* variables (the chart sets them): the same ones here.
    config = ControllerConfig.from_env(os.environ)
    settings = config.render
    objects, refused = [], 0
    for doc, typed in parsed:
        try:
            objects += render_resource(doc.data, settings, attempt=args.attempt, namespace=args.namespace,
                                       jobs=jobs, plan_settings=config.plan)  # fmt: skip
        except ValueError as exc:
            # The operator would create nothing for it: say why, render the others, and exit 1.
            print(f"{doc.where()}: {typed.resource.kind} {typed.name}: {exc}", file=sys.stderr)
            refused += 1
    if refused and not objects:
        return 1
    print(f"# Rendered by modelforge render; ownerReferences carry the placeholder uid {PLACEHOLDER_UID}.")
    print(yaml.safe_dump_all(objects, sort_keys=False, width=120), end="")
    return 1 if refused else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the capacity plan of FineTuneJob files: fits or not, DeepSpeed preset, host RAM, duration."""
    from .api.finetunejob import FineTuneJobSpec
    from .api.validate import SpecError, parse_resource
    from .launcher.devices import visible_gpus
    from .plan.capacity import PlanSettings, plan
    from .plan.report import format_plan, local_cpu_lines
    from .plan.resolve import PlanError

    settings = PlanSettings(gpu_memory_gib=quantity_gib(args.gpu_memory), peak_tflops=args.tflops)
    documents = _read_specs(args.files, ("FineTuneJob",))
    status = 1 if _read_specs.problems else 0
    for doc in documents:  # one plan per FineTuneJob; a bad one does not hide the others
        try:
            parsed = parse_resource(doc.data)
        except SpecError as exc:
            for problem in exc.problems:
                print(f"{doc.where(problem.path)}: {problem}", file=sys.stderr)
            status = 1
            continue
        job = parsed.spec
        assert isinstance(job, FineTuneJobSpec)
        arch, how, data = _plan_inputs(doc.path, job)
        try:
            result = plan(job, arch, settings, data, why_unknown=how)
        except PlanError as exc:
            print(f"{doc.where()}: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.fix:
            status = max(status, _print_fix(doc, parsed.name, job, arch, settings))
            continue
        print(f"{doc.where()}: FineTuneJob {parsed.name}")
        print("\n".join(format_plan(job, arch, result, how)))
        if not visible_gpus(os.environ):  # `modelforge run` here would train on the CPU: say what that means
            print("\n".join(local_cpu_lines(job)))
        if result.fits is False:
            status = 1
    return status


def _print_fix(doc: Any, name: str, job: Any, arch: Any, settings: Any) -> int:
    """`plan --fix`: the manifest with the plan's cheapest fix applied, on stdout; what to do with it on stderr.
    The fields a fix changes cannot change on an existing FineTuneJob (the API server refuses it): the job is
    deleted and the fixed manifest applied, or the manifest given another name."""
    import yaml

    from .plan.capacity import cheapest_fix

    if arch is None:
        print(f"{doc.where()}: FineTuneJob {name}: not planned (unknown architecture): nothing to fix", file=sys.stderr)
        return 1
    found = cheapest_fix(job, arch, settings)
    if found is None:
        print(f"{doc.where()}: FineTuneJob {name}: fits as it is, or no single change makes it fit "
              "(modelforge plan FILE says which)", file=sys.stderr)  # fmt: skip
        return 0 if job is not None else 1
    words, fixed = found
    before, after = job.to_wire(), fixed.to_wire()
    data = dict(doc.data)
    data["spec"] = {**data["spec"], **{k: v for k, v in after.items() if before.get(k) != v}}
    print(f"# modelforge plan --fix: {words}")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    print("---")
    changed = sorted(k for k, v in after.items() if before.get(k) != v)
    if changed == ["resources"]:  # resources may be edited on a job that exists: it is planned again
        how = "`kubectl apply -f` the printed manifest: the job is planned again"
    else:
        how = (f"spec.{', spec.'.join(changed)} cannot change on a FineTuneJob that exists: `kubectl delete ftj "
               f"{name}`, then `kubectl apply -f` the printed manifest (or give it another name)")  # fmt: skip
    print(f"{doc.where()}: FineTuneJob {name}: {words}. {how}", file=sys.stderr)
    return 0


def _plan_inputs(file: Path, spec: Any) -> tuple[Any, str, Any]:
    """Architecture (a local config.json, else the table) and row counts of local datasets, for `plan`."""
    from .launcher.dataset import check_file, is_local_source
    from .plan.capacity import DataStats
    from .plan.models import from_config, guess

    base = file.resolve().parent
    source = spec.model.source
    if is_local_source(source) and (base / source).is_dir():
        arch = from_config(base / source)
        how = "" if arch else f"{source}/config.json could not be read"
    else:
        arch, how = guess(source)
    paths = [base / d.source for d in spec.datasets]
    data = None
    if all(is_local_source(d.source) and p.is_file() for d, p in zip(spec.datasets, paths, strict=True)):
        rows = sum(d.samples or check_file(p, fmt=d.format.value).usable_rows
                   for d, p in zip(spec.datasets, paths, strict=True))  # fmt: skip
        data = DataStats(rows=rows)
    return arch, how, data


def quantity_gib(value: str) -> float:
    from .api.base import quantity_bytes

    return quantity_bytes(value) / 2**30


def cmd_validate_data(args: argparse.Namespace) -> int:
    from .launcher.dataset import check_file, is_local_source, tokenizer_counter

    counter = tokenizer_counter(args.model) if args.model else None
    if args.max_length and not args.model:
        print("note: --max-length needs --model PATH (its tokenizer) to count tokens; lengths not checked")
    failed = 0
    for source in args.files:
        if not is_local_source(source):
            print(f"{source}: hub dataset, passed through to ms-swift (not checked here)")
            continue
        media_root = Path(args.media_root).resolve() if args.media_root else None
        report = check_file(
            Path(source), fmt=args.format, max_length=args.max_length, count_tokens=counter, media_root=media_root
        )
        for line in report.render():
            print(line)
        failed += not report.ok
    if failed:
        print(f"{failed} dataset file(s) unusable: fix the rows above before training", file=sys.stderr)
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from .api.validate import SpecError
    from .launcher.local import run_local

    try:
        outcome = run_local(Path(args.spec), output=args.output and Path(args.output), name=args.name,
                            dry_run=args.dry_run, processes=args.processes,
                            progress_port=args.progress_port)  # fmt: skip
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)  # each names the file:line it is about
        return 1
    return outcome.process_exit_code


def cmd_operator(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from .controller.config import ControllerConfig
    from .controller.main import run_operator

    config = ControllerConfig.from_env(os.environ)
    if args.namespace:
        config = dataclasses.replace(config, namespaces=tuple(args.namespace))
    run_operator(config, json_logs=not args.plain_logs, verbose=args.verbose)
    return 0


KINDS = {"ftj": "finetunejobs", "finetunejob": "finetunejobs", "mserve": "modelserves", "modelserve": "modelserves"}


def _custom_api() -> Any:
    """The API of the cluster of the current kubeconfig (or the pod's ServiceAccount), made once per command."""
    from kubernetes.client import CustomObjectsApi

    from .controller.kube import make_api_client

    return CustomObjectsApi(make_api_client(None))


def _fetch(args: argparse.Namespace, api: Any) -> dict[str, Any] | None:
    """The named FineTuneJob (or ModelServe)."""
    from kubernetes.client.exceptions import ApiException

    plurals = [KINDS[args.kind]] if args.kind else ["finetunejobs", "modelserves"]
    for plural in plurals:
        try:
            found = api.get_namespaced_custom_object("modelforge.io", "v1alpha1", args.namespace, plural, args.name)
            return cast(dict[str, Any], found)
        except ApiException as exc:
            if exc.status != 404:
                why = f"cannot read {plural}/{args.name} in {args.namespace}: {exc.reason} ({exc.status})"
                raise SystemExit(why) from None
    raise SystemExit(f"no FineTuneJob or ModelServe {args.name} in namespace {args.namespace}")


def _ascii_only() -> bool:
    """The sparkline's block characters only where the terminal's encoding has them."""
    return not (sys.stdout.encoding or "").lower().replace("-", "").startswith("utf")


def cmd_status(args: argparse.Namespace) -> int:
    from .status_view import describe

    obj = _fetch(args, _custom_api())
    print("\n".join(describe(obj or {}, ascii_only=_ascii_only())))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Redraw until the job ends: exit 0 on Succeeded, 1 on Failed (a ModelServe: until Ready or Failed)."""
    import time

    from .status_view import FINISHED, describe

    last, api = None, _custom_api()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        try:
            obj = _fetch(args, api) or {}
        except Exception as exc:  # the API server gone for a moment: say so and look again, until --timeout
            trouble = _cluster_trouble(exc)
            if last is None or trouble is None or not type(exc).__module__.startswith("urllib3"):
                raise  # never reached it (a wrong kubeconfig, say), or not a network error: one line, exit 1
            print(f"{trouble}; trying again", file=sys.stderr, flush=True)
            if deadline and time.monotonic() > deadline:
                return 2
            time.sleep(args.interval)
            continue
        lines = describe(obj, ascii_only=_ascii_only())
        if lines != last:
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")  # redraw in place on a terminal; plain lines otherwise
            print("\n".join(lines), flush=True)
            last = lines
        phase = (obj.get("status") or {}).get("phase")
        if phase in FINISHED or (obj.get("kind") == "ModelServe" and phase == "Ready"):
            return FINISHED.get(phase, 0)
        if deadline and time.monotonic() > deadline:
            print(f"still {phase or 'Pending'} after {args.timeout:.0f} s", file=sys.stderr)
            return 2
        time.sleep(args.interval)


def cmd_logs(args: argparse.Namespace) -> int:
    """Print (and with -f, follow) the log of a FineTuneJob's training pod or a ModelServe's engine."""
    import threading
    import time

    from kubernetes.client import CoreV1Api, CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    from .controller.kube import make_api_client
    from .render.logs import NoLogs, log_selector, log_target

    client = make_api_client(None)
    obj = _fetch(args, CustomObjectsApi(client)) or {}
    core = CoreV1Api(client)
    selector = log_selector(obj, args.attempt)
    pods: list[dict[str, Any]] = []
    if selector:
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        listed: Any = core.list_namespaced_pod(args.namespace, label_selector=labels, _request_timeout=30)
        pods = [cast(dict[str, Any], client.sanitize_for_serialization(p)) for p in listed.items]
    try:
        target = log_target(obj, pods, args.rank, args.attempt)
    except NoLogs as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"==> pod {target.pod}, container {target.container} ({target.phase})", file=sys.stderr, flush=True)

    def phase() -> str | None:
        """The pod's phase now; "gone" once it is deleted; None when the API cannot say right now."""
        try:
            pod: Any = core.read_namespaced_pod(target.pod, args.namespace, _request_timeout=10)
        except ApiException as exc:
            return "gone" if exc.status == 404 else None
        except Exception:  # the API server unreachable for a moment: ask again
            return None
        return str(pod.status.phase) if pod.status and pod.status.phase else None

    now: str | None = target.phase
    if args.follow and now == "Pending":  # as kubectl does: wait for the container to start
        print(f"waiting for pod {target.pod} to start ...", file=sys.stderr, flush=True)
        deadline = time.monotonic() + PENDING_WAIT_SECONDS
        while now in ("Pending", None) and time.monotonic() < deadline:
            time.sleep(1.0)
            now = phase()
    try:
        response: Any = core.read_namespaced_pod_log(
            target.pod, args.namespace, container=target.container, follow=args.follow,
            tail_lines=args.tail if args.tail >= 0 else None, _preload_content=False,
        )  # fmt: skip
    except ApiException as exc:
        print(f"cannot read the log of pod {target.pod}: {_api_message(exc)}", file=sys.stderr)
        return 1
    # When the reader started waiting on the socket (None while it writes what it got).
    ended, lock = threading.Event(), threading.Lock()
    waiting: list[float | None] = [time.monotonic()]
    if args.follow:
        # A kubelet ends the stream when the container exits. This also ends it when the pod is done or gone
        # (a lost node's kubelet never does), once the reader has waited a while for more since then and none
        # came, so no last line is cut, however slowly stdout is read.
        def quiet(done_at: float) -> bool:
            since = waiting[0]
            return since is not None and time.monotonic() - max(since, done_at) >= FOLLOW_DRAIN_SECONDS

        def watch_pod() -> None:
            while not ended.wait(FOLLOW_POLL_SECONDS):
                if phase() not in ("Succeeded", "Failed", "gone"):
                    continue
                done_at = time.monotonic()
                while not ended.is_set() and not quiet(done_at):
                    ended.wait(0.5)
                with lock:
                    if not ended.is_set():
                        ended.set()
                        with contextlib.suppress(Exception):
                            response.shutdown()
                return

        threading.Thread(target=watch_pod, daemon=True).start()
    out, chunks = sys.stdout.buffer, response.stream(65536, decode_content=True)
    try:
        while True:
            waiting[0] = time.monotonic()
            chunk = next(chunks, None)
            waiting[0] = None
            if chunk is None:
                break
            out.write(chunk)
            out.flush()
    except BrokenPipeError:  # `modelforge logs X | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the stream cut by shutdown() above, or by the connection
        if not ended.is_set():
            print(f"the log stream of pod {target.pod} ended: {exc}", file=sys.stderr)
            return 1
    finally:
        with lock:
            ended.set()
            response.release_conn()
    return 0


PENDING_WAIT_SECONDS = 60.0  # `logs -f` on a pod whose container has not started
FOLLOW_POLL_SECONDS = 2.0
FOLLOW_DRAIN_SECONDS = 2.0  # after the pod ended: stop once the reader has waited this long for more


def _api_message(exc: Any) -> str:
    """The API server's own words from an ApiException (its Status message), else the HTTP reason."""
    try:
        message = json.loads(exc.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message) if message else f"{exc.reason} ({exc.status})"


def _cluster_trouble(exc: Exception) -> str | None:
    """One line for a cluster that cannot be talked to (no kubeconfig, unreachable, refused), else None."""
    module = type(exc).__module__
    if module.startswith("kubernetes.config"):
        return f"no cluster to talk to: {exc} (set KUBECONFIG, or run this in a pod with a ServiceAccount)"
    if module.startswith("urllib3"):
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach the API server of the current kubeconfig: {reason}"
    if module.startswith("kubernetes.client") and hasattr(exc, "status"):
        hint = " (your user lacks that permission: ask for it, or use a kubeconfig that has it)" \
            if getattr(exc, "status", None) == 403 else ""  # fmt: skip
        return f"the API server refused: {_api_message(exc)}{hint}"
    return None


def cmd_serve_agent(args: argparse.Namespace) -> int:
    from .launcher.serve_agent import run

    run(args.engine, Path(args.adapters) if args.adapters else None, args.api_key_env, args.host, args.port,
        args.interval)  # fmt: skip
    return 0


def cmd_chat_template(args: argparse.Namespace) -> int:
    from .launcher.chat_template import main

    return main(args.model, args.out)


def cmd_launch(args: argparse.Namespace) -> int:
    from .launcher.entrypoint import launch_in_pod

    return launch_in_pod(Path(args.config), Path(args.termination_log)).process_exit_code


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from .testing import build_tiny_model, write_chat_dataset, write_eval_dataset

    if args.hidden is not None and (args.vision or args.hidden % 8):
        why = "the vision model has its own sizes" if args.vision else f"{args.hidden} is not a multiple of 8"
        print(f"modelforge tiny-model: --hidden: {why}", file=sys.stderr)
        return 2
    if args.vision:
        from .testing_vl import build_tiny_vision_model, write_image_dataset

        path = build_tiny_vision_model(Path(args.path))
        print(f"wrote a tiny random Qwen2.5-VL model, its image processor and tokenizer to {path}")
        if args.dataset:
            data = write_image_dataset(Path(args.dataset), args.rows)
            print(f"wrote {args.rows} image rows to {data} (images under {data.parent / 'images'})")
        return 0
    hidden = args.hidden or 64
    path = build_tiny_model(Path(args.path), hidden=hidden)
    print(f"wrote a tiny random Qwen3 model (hidden size {hidden}) and tokenizer to {path}")
    if args.dataset:
        print(f"wrote {args.rows} chat rows to {write_chat_dataset(Path(args.dataset), args.rows)}")
    if args.eval_dataset:
        print(f"wrote 20 held-out questions with answers to {write_eval_dataset(Path(args.eval_dataset))}")
    return 0


def _api_key(args: argparse.Namespace) -> str | None:
    """The API key from the environment variable the user named (never from the command line)."""
    import os

    if not args.api_key_env:
        return None
    key = os.environ.get(args.api_key_env)
    if not key:
        raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    return key


def _infer_endpoint(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    from .client import EndpointError, chat, list_models

    api_key = _api_key(args)
    results = []
    try:
        model = args.model or list_models(args.endpoint, api_key)[0]  # once, not per question
        for row in rows:
            answer = chat(args.endpoint, row["messages"], model=model, api_key=api_key,
                          max_tokens=args.max_new_tokens)  # fmt: skip
            results.append({"messages": row["messages"], **answer.record()})
    except EndpointError as exc:
        print(exc, file=sys.stderr)
        return 1
    Path(args.output).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    latencies = [r["latency_s"] for r in results]
    speeds = [r["tokens_per_second"] for r in results if r["tokens_per_second"]]
    summary = f"wrote {len(results)} answer(s) to {args.output}; latency mean {sum(latencies) / len(latencies):.2f} s"
    if speeds:
        summary += f", {sum(speeds) / len(speeds):.1f} tokens/s"
    print(summary)
    return 0


def _local_target(args: argparse.Namespace) -> LocalModel:
    if not args.model and not args.adapter:  # only reached without --endpoint
        raise SystemExit("give --model PATH (a model directory) and/or --adapter PATH (a LoRA checkpoint)")
    return LocalModel(args.model, args.adapter, args.model_type, args.template, args.trust_remote_code)


def cmd_infer(args: argparse.Namespace) -> int:
    from .launcher.infer import InferenceError, QuestionFileError, infer_local, load_questions

    if args.endpoint:
        try:
            rows = load_questions(Path(args.questions), args.system)
        except QuestionFileError as exc:
            print(exc, file=sys.stderr)
            return 1
        return _infer_endpoint(args, rows)
    try:
        rows = load_questions(Path(args.questions), args.system)
        answers = infer_local(_local_target(args), rows, Path(args.output), max_new_tokens=args.max_new_tokens)
    except (QuestionFileError, InferenceError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {len(answers)} answer(s) to {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .api.evaluation import EvaluationSpec
    from .launcher.evaluate import (
        EVAL_DIR,
        EvalFileError,
        Judge,
        adapter_base,
        endpoint_answerer,
        evaluate,
        load_eval_rows,
        local_answerer,
    )

    judge_spec = None
    if args.judge_endpoint:
        judge_spec = {"endpoint": args.judge_endpoint, "model": args.judge_model}
        args.metrics = args.metrics or "rougeL,bleu,exactMatch,contains"
        if "judge" not in args.metrics.split(","):
            args.metrics += ",judge"
    gate = None
    if args.gate_metric or args.min is not None or args.min_improvement is not None:
        gate = {"metric": args.gate_metric or "rougeL", "minimum": args.min, "minImprovement": args.min_improvement}
    fields = {"datasets": [{"source": d} for d in args.dataset], "baseline": not args.no_baseline, "gate": gate,
              "maxNewTokens": args.max_new_tokens, "timeoutSeconds": args.timeout_seconds, "judge": judge_spec,
              **({"metrics": args.metrics.split(",")} if args.metrics else {})}  # fmt: skip
    from .api.validate import SpecError, parse_resource

    try:  # the same checks and CEL rules as spec.evaluation, errors named by the option's field
        parse_resource({"apiVersion": "modelforge.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "eval"},
                        "spec": {"model": {"source": "eval"}, "datasets": [{"source": "eval"}],
                                 "hyperparameters": {"epochs": 1}, "evaluation": _drop_none(fields)}})  # fmt: skip
    except SpecError as exc:
        for problem in exc.problems:
            print(f"error: {str(problem).replace('spec.evaluation.', '')}", file=sys.stderr)
        return 2
    spec = EvaluationSpec.model_validate(_drop_none(fields))
    try:
        rows = load_eval_rows([(Path(d), args.samples) for d in args.dataset])
    except EvalFileError as exc:
        print("\n".join(exc.problems[:10]), file=sys.stderr)
        return 1
    tokens = spec.max_new_tokens
    if args.endpoint:
        key = _api_key(args)
        tuned = endpoint_answerer(args.endpoint, model=args.model, api_key=key, max_new_tokens=tokens)
        base_name = args.baseline
        base = endpoint_answerer(args.endpoint, model=base_name, api_key=key, max_new_tokens=tokens) if base_name \
            else None  # fmt: skip
    else:
        target = _local_target(args)
        tuned = local_answerer(target, max_new_tokens=tokens)
        trained = adapter_base(Path(target.adapter)) if target.adapter else None  # its args.json
        # An adapter's baseline is its base model; a whole model has none unless --baseline names one.
        base_source = args.baseline or ((target.model or (trained[0] if trained else None)) if target.adapter else None)
        kind = args.model_type or (trained[1] if trained and not args.baseline else None)
        template = args.template or (trained[2] if trained and not args.baseline else None)
        base_model = LocalModel(base_source, None, kind, template, args.trust_remote_code)
        base = local_answerer(base_model, max_new_tokens=tokens) if base_source else None
    if spec.baseline and base is None:
        print("note: no base model to compare with (give --baseline, or --no-baseline); scoring the model alone",
              file=sys.stderr)  # fmt: skip
    judge = None
    if spec.judge is not None:
        key = os.environ.get(args.judge_api_key_env) if args.judge_api_key_env else None
        if args.judge_api_key_env and not key:
            print(f"error: --judge-api-key-env {args.judge_api_key_env}: that environment variable is not set",
                  file=sys.stderr)  # fmt: skip
            return 2
        judge = Judge(spec.judge.endpoint, spec.judge.model, key)
    out = Path(args.output or EVAL_DIR)
    result = evaluate(spec, rows, tuned, base if spec.baseline else None, out,
                      say=lambda line: print(line, file=sys.stderr, flush=True), rater=judge)  # fmt: skip
    print(f"results: {out / 'results.jsonl'}; report: {out / 'report.md'}")
    (out / "summary.json").write_text(json.dumps(result.status.to_wire(), indent=2) + "\n")
    if result.status.error and not result.status.metrics:
        return 1
    return 1 if result.status.passed is False or (gate and result.status.passed is None) else 0


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def cmd_chat(args: argparse.Namespace) -> int:
    import tempfile

    from .launcher.infer import InferenceError, infer_local, load_questions

    images = [Path(image).resolve() for image in args.image or ()]
    if images and args.endpoint:
        print("--image: only with a local model for now (not with --endpoint)", file=sys.stderr)
        return 2
    for image in images:
        if not image.is_file():
            print(f"--image {image}: file not found", file=sys.stderr)
            return 2
    if args.endpoint:
        from .client import EndpointError, chat, visible

        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": args.prompt})
        try:
            answer = chat(args.endpoint, messages, model=args.model, api_key=_api_key(args),
                          max_tokens=args.max_new_tokens)  # fmt: skip
        except EndpointError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(visible(answer.text, args.show_thinking))
        speed = f", {answer.tokens_per_second} tokens/s" if answer.tokens_per_second else ""
        print(f"[{answer.model}: {answer.latency_s:.2f} s{speed}]", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        question = Path(tmp) / "q.txt"
        question.write_text(args.prompt.replace("\n", " ") + "\n")
        rows = load_questions(question, args.system)
        if images:
            turn = rows[0]["messages"][-1]
            if "<image>" not in turn["content"]:
                turn["content"] = "<image>" * len(images) + turn["content"]
            rows[0]["images"] = [str(image) for image in images]
        try:
            (local_answer,) = infer_local(
                _local_target(args), rows, Path(tmp) / "a.jsonl", max_new_tokens=args.max_new_tokens
            )
        except InferenceError as exc:
            print(exc, file=sys.stderr)
            return 1
    from .client import visible

    print(visible(local_answer["response"], args.show_thinking))
    return 0


def _add_local_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="an OpenAI-compatible server (e.g. http://host:8000/v1) instead of a local model")
    p.add_argument("--api-key-env", help="with --endpoint: the environment variable that holds the API key")
    p.add_argument("--model", help="local: model directory (base or merged); --endpoint: served model name")
    p.add_argument("--adapter", help="LoRA checkpoint directory (its base model is read from its args.json)")
    p.add_argument("--model-type", help="ms-swift model_type for a local model (e.g. qwen3)")
    p.add_argument("--template", help="ms-swift template for a local model (e.g. qwen3)")
    p.add_argument("--system", help="system prompt added to every question")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model's own Python code (config.json auto_map), as spec.model.trustRemoteCode does",
    )


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, when it has one worth saying (not None, not off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        worth_saying = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if worth_saying and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low, else a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def _command(sub: Any, name: str, *, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with what it does and shows every option's default."""
    kwargs.setdefault("description", help[0].upper() + help[1:] + ".")
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, formatter_class=_DefaultsFormatter, **kwargs)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelforge",
        description="Fine-tune and serve LLMs on Kubernetes (FineTuneJob, ModelServe), or locally.",
    )
    parser.add_argument("--version", action="version", version=f"modelforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "crds", help="write the generated CRDs and docs/api.md (or check them with --check)")
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file differs from the models")
    p.add_argument("--root", default=".", help="project root")
    p.set_defaults(handler=cmd_crds)

    p = _command(sub, "validate", help="validate FineTuneJob/ModelServe YAML files as kubectl apply would")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML files (other objects in them are skipped)")
    p.set_defaults(handler=cmd_validate)

    p = _command(
        sub,
        "render",
        help="print the Kubernetes objects the operator would create for these specs "
        "(with its MODELFORGE_* settings when they are set in the environment)",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML files with FineTuneJobs and ModelServes")
    p.add_argument("--attempt", type=int, default=1, help="which training attempt to render")
    p.add_argument("--namespace", default="default", help="namespace when the spec names none")
    p.set_defaults(handler=cmd_render)

    p = _command(sub, "plan", help="estimate GPU memory, DeepSpeed preset, host RAM and duration of FineTuneJobs")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML files with FineTuneJobs (ModelServes are skipped)")
    p.add_argument("--gpu-memory", default="80Gi", help="GPU memory when the spec has no resources.gpuMemory")
    p.add_argument("--tflops", type=float, default=800.0, help="peak bf16 TFLOP/s of one GPU (H100: ~800)")
    p.add_argument(
        "--fix",
        action="store_true",
        help="print each job that does not fit as a manifest with the plan's cheapest fix applied",
    )
    p.set_defaults(handler=cmd_plan)
    p = _command(sub, "validate-data", help="check every row of local dataset files before training")
    p.add_argument("files", nargs="+", metavar="FILE", help="JSONL or JSON-array files (hub ids are skipped)")
    p.add_argument("--format", default="auto", help="the rows' layout (auto: from each row's keys)",
                   choices=["auto", "messages", "sharegpt", "alpaca", "query-response", "text"])  # fmt: skip
    p.add_argument("--max-length", type=int, help="count rows longer than this many tokens (needs --model)")
    p.add_argument("--model", help="model directory whose tokenizer counts tokens")
    p.add_argument(
        "--media-root",
        metavar="DIR",
        help="folder relative images/videos/audios paths are resolved against (default: each file's)",
    )
    p.set_defaults(handler=cmd_validate_data)

    p = _command(sub, "run", help="run a FineTuneJob spec on this machine (pre-flight, train, merge)")
    p.add_argument("spec", metavar="SPEC.yaml", help="a YAML file with the FineTuneJob to run")
    p.add_argument("--output", help="output directory (default: ./modelforge-output/<name>)")
    p.add_argument("--name", help="which FineTuneJob, when the file has several")
    p.add_argument("--dry-run", action="store_true", help="pre-flight and print the swift command; do not train")
    p.add_argument("--processes", type=int, metavar="N",
                   help="training processes (ranks) on this machine: N GPUs, or N on the CPU with gloo "
                        "(default: the spec's gpusPerNode, up to the GPUs visible; 1 on the CPU)")  # fmt: skip
    p.add_argument("--progress-port", type=int, metavar="PORT",
                   help="serve /progress and /metrics (Prometheus) on 127.0.0.1:PORT while training, as a "
                        "training pod does (0: any free port, printed)")  # fmt: skip
    p.set_defaults(handler=cmd_run)

    p = _command(sub, "operator", help="run the operator (watches FineTuneJobs; settings from MODELFORGE_* env)")
    p.add_argument("--namespace", action="append", help="watch only this namespace (repeatable; default: all)")
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")
    p.add_argument("--verbose", action="store_true", help="debug-level logs (kopf's too)")
    p.set_defaults(handler=cmd_operator)

    for command, handler, text in (
        ("status", cmd_status, "show one FineTuneJob or ModelServe: phase, progress, conditions, outputs"),
        ("watch", cmd_watch, "follow a FineTuneJob until it ends (exit 0 Succeeded, 1 Failed) or a ModelServe "
                             "until Ready"),
    ):  # fmt: skip
        p = _command(sub, command, help=text, description=text[0].upper() + text[1:] + " (the cluster of the current "
                     "kubeconfig).")  # fmt: skip
        p.add_argument("name", help="the FineTuneJob's or ModelServe's name")
        p.add_argument("-n", "--namespace", default="default", help="namespace")
        p.add_argument("--kind", choices=sorted(KINDS), help="ftj or mserve when both kinds have this name")
        if command == "watch":
            p.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
            p.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (0: never)")
        p.set_defaults(handler=handler)

    text = "print the log of a FineTuneJob's training pod (rank 0 by default) or of a ModelServe's engine"
    p = _command(sub, "logs", help=text, description=text[0].upper() + text[1:] + " (the cluster of the current "
                 "kubeconfig). A FineTuneJob's log is its current attempt's; a `distributed.runtime: ray` job's is "
                 "the Ray driver's, where every worker prints.")  # fmt: skip
    p.add_argument("name", help="the FineTuneJob's or ModelServe's name")
    p.add_argument("-n", "--namespace", default="default", help="namespace")
    p.add_argument("--kind", choices=sorted(KINDS), help="ftj or mserve when both kinds have this name")
    p.add_argument("--rank", type=_at_least(0), default=0, metavar="N",
                   help="a FineTuneJob's node rank (the pod of that index; its processes share its log), or a "
                        "ModelServe's replica (oldest first)")  # fmt: skip
    p.add_argument("--attempt", type=_at_least(1), metavar="N",
                   help="a FineTuneJob's attempt (default: the current one). An attempt a newer one replaced is "
                        "deleted with its pods; the last one stays until the job is deleted, if its pods ended "
                        "(a torchrun job that failed for good)")  # fmt: skip
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the pod ends")
    p.add_argument("--tail", type=_at_least(-1), default=-1, metavar="LINES",
                   help="only the last LINES lines (-1: all)")  # fmt: skip
    p.set_defaults(handler=cmd_logs)

    p = _command(sub, "serve-agent", help="a serving pod's sidecar: keeps live LoRA adapters loaded, reports models")
    p.add_argument("--engine", default="http://127.0.0.1:8000", help="the engine in the same pod")
    p.add_argument("--adapters", help="JSON file of the desired adapters [{name, path}] (omit: report only)")
    p.add_argument("--api-key-env", help="environment variable holding the engine's API key (from its Secret)")
    p.add_argument("--host", default="0.0.0.0", help="address of the report server")
    p.add_argument("--port", type=int, default=8091, help="port of the read-only report (GET /adapters)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    p.set_defaults(handler=cmd_serve_agent)

    p = _command(sub, "chat-template", help="a vLLM serving pod's init step: the model's chat template with the "
                       "default system prompt (spec.systemPrompt)")  # fmt: skip
    p.add_argument("--model", required=True, help="the model directory (its chat_template.jinja or tokenizer_config)")
    p.add_argument("--out", required=True, help="where to write the wrapped template (vLLM --chat-template)")
    p.set_defaults(handler=cmd_chat_template)

    p = _command(sub, "launch", help="the training pod's entrypoint (reads the job ConfigMap and pod env)")
    p.add_argument("--config", default="/etc/modelforge/job.json", help="the job ConfigMap's file, as mounted")
    p.add_argument("--termination-log", default="/dev/termination-log",
                   help="where the outcome line goes (the pod's terminationMessagePath)")  # fmt: skip
    p.set_defaults(handler=cmd_launch)

    p = _command(sub, "tiny-model", help="build a tiny random Qwen3 model + tokenizer locally (no hub)")
    p.add_argument("path", help="directory to write the model into")
    p.add_argument("--dataset", help="also write a chat dataset (JSONL, messages format) here")
    p.add_argument("--rows", type=int, default=64, help="rows of the dataset")
    p.add_argument("--eval-dataset", metavar="PATH",
                   help="also write 20 held-out questions of the dataset's domain with reference answers (JSONL, "
                        "query/response), for spec.evaluation")  # fmt: skip
    p.add_argument("--hidden", type=_at_least(16), metavar="SIZE",
                   help="hidden size of the text model, a multiple of 8 (4 attention heads of SIZE/4 each; default "
                        "64); 128 or 256 for vLLM's CPU build, whose attention takes head sizes 32, 64, 80, ... "
                        "only")  # fmt: skip
    p.add_argument(
        "--vision",
        action="store_true",
        help="a tiny Qwen2.5-VL instead (vision tower, image processor); --dataset then writes images + rows",
    )
    p.set_defaults(handler=cmd_tiny_model)

    p = _command(sub, "infer", help="answer every question in a file with a local model")
    _add_local_model_args(p)
    p.add_argument("--questions", required=True, help=".txt (one per line) or JSONL with messages/query")
    p.add_argument("--output", required=True, help="results.jsonl")
    p.set_defaults(handler=cmd_infer)

    text = "score a model on questions with reference answers, against a baseline, with an optional gate"
    p = _command(sub, "eval", help=text, description=text[0].upper() + text[1:] + " (the evaluation a FineTuneJob's "
                 "spec.evaluation runs after training; docs/evaluation.md). Exit 0: passed or no gate; 1: the gate "
                 "failed or nothing could be scored; 2: bad options.")  # fmt: skip
    _add_local_model_args(p)
    p.add_argument("--dataset", action="append", required=True, metavar="FILE",
                   help='JSONL rows {"messages": [...]} ending with the reference answer, or {"query", "response"} '
                        "(repeatable)")  # fmt: skip
    p.add_argument("--samples", type=_at_least(1), metavar="N", help="only the first N rows of each file")
    p.add_argument("--baseline", metavar="MODEL",
                   help="the model to compare with: a local model directory, or with --endpoint a served model name "
                        "(default with --adapter: the adapter's base model)")  # fmt: skip
    p.add_argument("--no-baseline", action="store_true", help="score the model alone")
    p.add_argument("--metrics", help="comma-separated: exactMatch, contains, rougeL, bleu, chrf, judge "
                                     "(default: rougeL,bleu,exactMatch,contains)")  # fmt: skip
    p.add_argument("--gate-metric", metavar="METRIC", help="the metric the gate reads (default rougeL)")
    p.add_argument("--min", type=float, metavar="SCORE", help="gate: the model's score must be at least this (0-100)")
    p.add_argument("--min-improvement", type=float, metavar="POINTS",
                   help="gate: the model's score minus the baseline's must be at least this")  # fmt: skip
    p.add_argument("--judge-endpoint", metavar="URL",
                   help="an OpenAI-compatible server whose model rates each answer 0-10 against its reference "
                        "(adds the judge metric)")  # fmt: skip
    p.add_argument("--judge-model", metavar="NAME", help="the judge's model (default: the first it lists)")
    p.add_argument("--judge-api-key-env", metavar="VAR", help="the environment variable that holds the judge's key")
    p.add_argument("--timeout-seconds", type=_at_least(10), default=3600, help="budget for the whole evaluation")
    p.add_argument("--output", metavar="DIR", help="where results.jsonl, report.md, scores.png go (default: ./eval)")
    p.set_defaults(handler=cmd_eval)

    p = _command(sub, "chat", help="ask a local model one question")
    _add_local_model_args(p)
    p.add_argument("prompt", help="the question")
    p.add_argument(
        "--image", action="append", metavar="FILE", help="an image to ask about (repeatable; a vision model)"
    )
    p.add_argument(
        "--show-thinking", action="store_true", help="keep an empty <think></think> block (hidden by default)"
    )
    p.set_defaults(handler=cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .specfile import SpecFileError

    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SpecFileError as exc:  # every command: a file that cannot be read says file:line and why
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line for the person, the traceback only when asked for
        if os.environ.get("MODELFORGE_DEBUG"):
            raise
        if trouble := _cluster_trouble(exc):  # status, watch, logs: the cluster's answer, not our bug
            print(f"error: {trouble}", file=sys.stderr)
            return 1
        print(f"error: internal error ({type(exc).__name__}: {str(exc)[:300]}); this is a ModelForge bug: rerun "
              "with MODELFORGE_DEBUG=1 for the traceback and report it", file=sys.stderr)  # fmt: skip
        return 70


if __name__ == "__main__":
    sys.exit(main())

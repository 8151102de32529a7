"""The kind tier: prerequisites (a missing one is a skip with the command that fixes it, and in CI a failure),
the record of every address this test process dials, the evidence a failed run leaves behind, and the
cluster started in the background as soon as the session knows it will run the tier."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import kindcluster
from tests.images.pod import docker, image_name

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("operator", "trainer-cpu", "vllm-cpu")  # loaded into the worker

DIALED: set[str] = set()
RECORDING = [False]  # on while the kind tier's tests run (other tiers dial their own containers' bridges)


def _audit(event: str, args: tuple) -> None:  # type: ignore[type-arg]
    """Every socket.connect of this process (the tests, the Kubernetes client, port-forward probes)."""
    if RECORDING[0] and event == "socket.connect" and len(args) > 1 and isinstance(args[1], tuple):
        DIALED.add(str(args[1][0]))


sys.addaudithook(_audit)


def not_local(addresses: set[str]) -> list[str]:
    """The dialed addresses that are not this machine's loopback ("localhost" resolves to it, and is dialed
    by address anyway)."""
    strays = []
    for address in addresses:
        try:
            if not ipaddress.ip_address(address).is_loopback:
                strays.append(address)
        except ValueError:
            if address != "localhost":
                strays.append(address)
    return sorted(strays)


def _is_e2e(item: pytest.Item) -> bool:
    return "tests/e2e/" in str(item.fspath).replace("\\", "/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)


def missing() -> str | None:
    """What the tier lacks to run here, said with the command that provides it; None when nothing."""
    if docker("info", check=False).returncode != 0:
        return "no Docker engine answers: run scripts/docker.sh up (as root)"
    absent = [image_name(n) for n in IMAGES if docker("image", "inspect", image_name(n), check=False).returncode]
    if absent:
        return f"images not built: {', '.join(absent)}: run make images BASE=local"
    if os.geteuid() != 0 and not (kindcluster.bin_dir() / "kind").exists():
        return "kind is not built and building its node image needs root (debootstrap): run make kind as root"
    return None


@dataclass
class Background:
    """`kindcluster up <images>` started when collection ends: the cluster's start and the worker's image
    loads (~4 min, mostly waiting on containerd and the kubelet) overlap the tiers that run before this one."""

    process: subprocess.Popen[bytes]
    log: Path
    started: float
    claimed: bool = False  # the tier's cluster fixture took it (and deletes the cluster itself)
    summary: str = ""  # for the terminal summary: how long it took and how long the tier waited

    def wait(self) -> None:
        """Until the cluster is up with the images loaded; SystemExit with the log's tail if that failed."""
        self.claimed = True
        waited = time.monotonic()
        try:
            code: int | None = self.process.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self.stop()  # timed out, or interrupted while waiting (Ctrl-C does not reach its own session)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        if code != 0:
            raise SystemExit(f"`kindcluster up` in the background {'timed out' if code is None else f'exited {code}'}"
                             f" (log: {self.log}):\n{tail}")  # fmt: skip
        lines = [line for line in tail.splitlines() if line.startswith("[kind]")]
        self.summary = (f"kind cluster started in the background when collection ended; the tier reached it "
                        f"{waited - self.started:.0f} s later and waited {time.monotonic() - waited:.0f} s more\n"
                        + "\n".join(lines[-4:]))  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: kind and the docker pipes with it
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


BACKGROUND: list[Background] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the cluster now if the tier will run and can (otherwise its fixture says why, or reuses a kept
    cluster under REUSE_CLUSTER=1)."""
    if session.config.option.collectonly or not any(_is_e2e(item) for item in session.items):
        return
    try:
        if (os.environ.get("REUSE_CLUSTER") and kindcluster.status() == 0) or missing() is not None:
            return
    except Exception:  # a hung or absent Docker CLI: the fixture reports it as the tier's failure
        return
    log = kindcluster.cache_dir() / "run" / "background-up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "tests.e2e.kindcluster", "up",
                                    *(image_name(n) for n in IMAGES)],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    BACKGROUND.append(Background(process, log, time.monotonic()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"kind cluster starting in the background for tests/e2e (log: {log})")


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    for background in BACKGROUND:
        if background.summary:
            terminalreporter.write_line(background.summary)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The background start is stopped whatever happened; a cluster started for a tier that never ran (stopped
    by -x, interrupted) is deleted (the tier's fixture deletes its own), unless KEEP_CLUSTER=1."""
    for background in BACKGROUND:
        background.stop()
        if not background.claimed and not os.environ.get("KEEP_CLUSTER"):
            kindcluster.down()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        item.session.stash.setdefault(FAILED, []).append(item.nodeid)  # type: ignore[call-overload]
    return report


FAILED = pytest.StashKey[list]()


def e2e_gate(missing: str | None) -> None:
    """In CI a missing prerequisite fails the tier; elsewhere it skips with what to run."""
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the kind tier cannot run: {missing}", pytrace=False)
    pytest.skip(f"kind tier skipped: {missing}", allow_module_level=True)

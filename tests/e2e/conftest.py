"""The kind tier: prerequisites (a missing one is a skip with the command that fixes it, and in CI a failure),
the record of every address this test process dials, and the evidence a failed run leaves behind."""

from __future__ import annotations

import ipaddress
import os
import sys

import pytest

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


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

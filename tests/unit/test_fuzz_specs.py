"""Hypothesis: arbitrary and mutated specs never crash validation; they pass or fail with a located message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelforge.api.validate import validate_document
from modelforge.specfile import load_documents

VALID_DIR = Path(__file__).resolve().parents[1] / "specs" / "valid"
SEEDS = [doc.data for path in sorted(VALID_DIR.glob("*.yaml")) for doc in load_documents(path)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
TOP_PREFIXES = ("", "apiVersion", "kind", "metadata", "spec")


def _assert_located(doc: Any) -> None:
    problems = validate_document(doc)
    for problem in problems:
        assert problem.message.strip()
        assert problem.path.split(".")[0].split("[")[0] in TOP_PREFIXES


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=json_values, kind=st.sampled_from(["FineTuneJob", "ModelServe"]))
def test_random_specs_never_crash(spec, kind):
    _assert_located({"apiVersion": "modelforge.io/v1alpha1", "kind": kind, "metadata": {"name": "f"}, "spec": spec})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=json_values)
def test_mutated_valid_specs_never_crash(data, value):
    doc = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    path = data.draw(st.sampled_from(_paths(doc["spec"])))
    if not path:
        doc["spec"] = value
    else:
        parent = doc["spec"]
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = value
    _assert_located(doc)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_dropping_any_field_never_crashes(data):
    doc = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    path = data.draw(st.sampled_from([p for p in _paths(doc["spec"]) if p]))
    parent = doc["spec"]
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    _assert_located(doc)

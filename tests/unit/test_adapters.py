"""Live adapters, the pure part: what to load and unload, what vLLM's answers mean, one state per adapter."""

from __future__ import annotations

from modelforge.plan.adapters import AdapterResult, adapter_changes, combine, load_result, served_adapters, unload_done


def test_served_adapters_are_the_entries_with_a_parent():
    models = [{"id": "tiny", "root": "/m", "parent": None}, {"id": "a", "root": "/a", "parent": "tiny"}]
    assert served_adapters(models) == {"a": "/a"}


def test_changes_unload_what_is_gone_or_moved_and_load_what_is_new_or_moved():
    assert adapter_changes({"a": "/a", "b": "/b2", "c": "/c"}, {"a": "/a", "b": "/b", "x": "/x"}) == (
        ["b", "x"], [("b", "/b2"), ("c", "/c")])  # fmt: skip
    assert adapter_changes({"a": "/a"}, {"a": "/a"}) == ([], [])  # idempotent: nothing to do twice


def test_vllm_answers():
    assert load_result("a", 200, "") == AdapterResult("a", "Loaded")
    assert load_result("a", 400, "The lora adapter 'a' has already been loaded.").state == "Loaded"
    missing = load_result("a", 404, "No adapter found for /nope")
    assert missing.state == "Failed" and "cannot find" in missing.message and "/nope" in missing.message
    assert load_result("a", 500, "boom").message.startswith("the engine refused to load it (HTTP 500)")
    assert unload_done(200) and unload_done(404) and not unload_done(500)


def test_combine_across_replicas():
    loaded = {"adapters": [{"name": "a", "state": "Loaded"}]}
    failed = {"adapters": [{"name": "a", "state": "Failed", "message": "no such path"}]}
    assert combine([loaded, loaded], ["a"]) == [AdapterResult("a", "Loaded")]
    assert combine([loaded, failed], ["a"]) == [AdapterResult("a", "Failed", "no such path")]
    assert combine([loaded, {"adapters": []}], ["a"])[0].state == "Loading"
    assert combine([], ["a"])[0].state == "Loading"

"""`modelforge serve-agent`: the sidecar of a serving pod that keeps the engine's LoRA adapters as desired
and reports what the engine serves, so that the operator never needs the API key.

- Desired adapters: a JSON file (the `<serve>-adapters` ConfigMap the operator applies, mounted into the
  pod), `[{"name": ..., "path": ...}]`. Read on every pass, so a ConfigMap update reaches a running pod
  without a restart (the operator annotates the pods it serves on, so their kubelet refreshes the mounted
  ConfigMap within seconds instead of at its next periodic sync, up to a minute or more).
- The engine: `/v1/models`, `/v1/load_lora_adapter`, `/v1/unload_lora_adapter` on 127.0.0.1 (the same
  pod), with the API key from the environment variable the engine reads (the same Secret reference). A
  restarted engine has lost its runtime adapters; the next pass loads them again.
- Report: `GET /adapters` on its own port, read-only and without the key: whether the engine answers,
  the model ids it lists, and each desired adapter's state (Loaded / Loading / Failed + message). The
  key never leaves the pod; the report names models, never the key.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..plan.adapters import FAILED, LOADING, AdapterResult, adapter_changes, load_result, served_adapters, unload_done

log = logging.getLogger("modelforge.serve-agent")


def read_desired(path: Path) -> tuple[dict[str, str], str | None]:
    """(name -> path, problem). A missing file is no adapters; a broken one keeps what is loaded."""
    try:
        entries = json.loads(path.read_text())
        return {str(e["name"]): str(e["path"]) for e in entries}, None
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {}, f"{path}: cannot read the desired adapters ({exc})"


@dataclass
class Agent:
    engine: str  # http://127.0.0.1:8000
    adapters_file: Path | None  # None: report only (an engine without runtime adapters)
    api_key: str | None
    timeout: float = 30.0
    report: dict[str, Any] = field(default_factory=lambda: {"engineReady": False, "models": [], "adapters": []})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.engine.rstrip("/") + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def sync(self) -> dict[str, Any]:
        """One pass: read desired, ask the engine, unload and load the difference, publish the report."""
        desired, problem = read_desired(self.adapters_file) if self.adapters_file else ({}, None)
        try:
            status, body = self._call("GET", "/v1/models")
        except OSError as exc:
            return self._publish(False, [], [AdapterResult(n, LOADING, f"the engine does not answer yet ({exc})")
                                             for n in desired])  # fmt: skip
        if status != 200:
            message = f"/v1/models answered HTTP {status}" + (" (wrong API key?)" if status == 401 else "")
            return self._publish(False, [], [AdapterResult(n, LOADING, message) for n in desired])
        models = json.loads(body).get("data") or []
        states: dict[str, AdapterResult] = {}
        if self.adapters_file is not None and problem is None:
            unload, load = adapter_changes(desired, served_adapters(models))
            for name in unload:
                code, text = self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
                log.info(f"unloaded adapter {name}" if unload_done(code) else f"unload {name}: HTTP {code} {text}")
            for name, path in load:
                code, text = self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
                states[name] = load_result(name, code, text)
                log.info(f"load adapter {name} from {path}: {states[name].state} {states[name].message}".rstrip())
            if unload or load:
                models = json.loads(self._call("GET", "/v1/models")[1]).get("data") or []
        served = served_adapters(models)
        report = []
        for name, path in desired.items():
            if served.get(name) == path:
                report.append(AdapterResult(name, "Loaded"))
            elif served.get(name):  # loaded from another path, and unloading it failed: not what is asked
                report.append(AdapterResult(name, FAILED, f"loaded from {served[name]}, not {path}; it could not "
                                                          "be unloaded (see the agent's log)"))  # fmt: skip
            else:
                report.append(states.get(name) or AdapterResult(name, LOADING, problem or ""))
        return self._publish(True, [str(m.get("id")) for m in models], report, problem)

    def _publish(self, ready: bool, models: list[str], adapters: list[AdapterResult],
                 problem: str | None = None) -> dict[str, Any]:  # fmt: skip
        report = {"engineReady": ready, "models": models, "adapters": [a.wire() for a in adapters],
                  "updatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
        if problem:
            report["problem"] = problem  # the desired adapters could not be read: what is loaded stays
        with self.lock:
            self.report = report
        return report


def serve(agent: Agent, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in ("/adapters", "/healthz"):
                self.send_error(404)
                return
            with agent.lock:
                body = json.dumps(agent.report if self.path == "/adapters" else {"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the operator polls it: no line per request

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="serve-agent-http", daemon=True).start()
    return server


def run(engine: str, adapters_file: Path | None, api_key_env: str | None, host: str, port: int,
        interval: float) -> None:  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s serve-agent %(message)s")
    key = os.environ.get(api_key_env) if api_key_env else None
    agent = Agent(engine, adapters_file, key or None)
    server = serve(agent, host, port)
    log.info(f"reporting on http://{host}:{server.server_port}/adapters; engine {engine}"
             + (f"; adapters from {adapters_file}" if adapters_file else "; report only"))  # fmt: skip
    while True:
        try:
            agent.sync()
        except (OSError, ValueError) as exc:  # an engine restarting mid-pass: the next pass starts over
            log.info(f"pass interrupted: {exc}")
        time.sleep(interval)

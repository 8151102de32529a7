"""A rendered pod's container run as a real Docker container, set up the way a kubelet sets it up.

What the kubelet does and this reproduces, from the pod spec the renderer produced (nothing is hand-written):
- the user: runAsUser:runAsGroup, with fsGroup (and supplementalGroups) as supplementary groups;
- the container's securityContext: capabilities dropped (and the ones added), no privilege escalation
  (no_new_privs), a read-only root filesystem; seccomp RuntimeDefault is Docker's default profile;
- volumes with fsGroup ownership: an emptyDir is a fresh directory, mode 0777 plus the group of fsGroup and
  setgid; emptyDir `medium: Memory` at /dev/shm is the container's shared memory of that size; a ConfigMap is
  a read-only directory of its keys as files (0644, group fsGroup); a claim is a directory owned by another
  UID (the provisioner's, 0 here) with the group of fsGroup, group-writable and setgid (fsGroupChangePolicy
  does that once), its subPath created by the kubelet inside it if missing, readOnly mounts read-only;
- env: values, the downward API's metadata fields, Secret keys (given by the test, as the API would);
- the termination message: a file the kubelet bind-mounts at terminationMessagePath and reads afterwards.

The network: a pod's containers share one network namespace, held by a pause container on a Docker network
the test creates with `--internal` (no route off this machine); the test reaches the pod at its IP there,
as a Service would. `network="host"` runs the containers on this machine's loopback instead (the operator,
which talks to the local API server on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROVISIONER_UID = 0  # who owns a claim's files before the pod: the storage provisioner, never the pod's UID
SCRATCH_MODE = 0o2777  # an emptyDir after fsGroup: 0777 and setgid, group fsGroup
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CLAIM_MODE = 0o2775  # a claim after fsGroup: group-writable and setgid, group fsGroup


def docker_cli() -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "docker.sh"), "cli"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    return out.stdout.strip() or "docker"


DOCKER = docker_cli()


def docker(*args: str, timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def _quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", text)
    assert match, text
    return int(match.group(1)) * units.get(match.group(2), 1)


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    os.chown(path, uid, gid)
    os.chmod(path, mode)


@dataclass
class PodRunner:
    """Runs the containers of one rendered pod (the pod template's spec) as Docker containers.

    `claims` maps a claim name to the host directory that holds it; `config_maps` and `secrets` map a name to
    its data; `metadata` is the pod's (names and labels for the downward API); `extra_env` is what the
    control plane adds (an Indexed Job's JOB_COMPLETION_INDEX)."""

    pod: dict[str, Any]
    workdir: Path
    claims: Mapping[str, Path] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    network: str = "pod"  # or "host"
    service_account: Path | None = None  # a directory with token, ca.crt, namespace: the projected SA volume
    hostname: str = "pod"
    names: list[str] = field(default_factory=list)
    _pause: str = ""
    _network: str = ""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        context = self.pod.get("securityContext") or {}
        self.fs_group = context.get("fsGroup")
        self._volumes: dict[str, list[str]] = {}  # volume name -> docker args for a mount at {path}
        for claim_dir in self.claims.values():
            self._chown_claim(claim_dir)

    # --- volumes, prepared once per pod, as the kubelet does before any container starts
    def _group(self) -> int:
        return int(self.fs_group) if self.fs_group is not None else 0

    def _chown_claim(self, root: Path) -> None:
        """fsGroup on a claim: every file gets the group, directories g+rwx and setgid; the owner stays."""
        root.mkdir(parents=True, exist_ok=True)
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                continue
            mode = CLAIM_MODE if path.is_dir() else (path.stat().st_mode & 0o777) | 0o060
            _own(path, PROVISIONER_UID, self._group(), mode)

    def _volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    def _mount_args(self, mount: dict[str, Any]) -> list[str]:
        volume = self._volume(mount["name"])
        path = mount["mountPath"]
        read_only = bool(mount.get("readOnly"))
        if "emptyDir" in volume:
            if volume["emptyDir"].get("medium") == "Memory" and path == "/dev/shm":
                return ["--shm-size", str(_quantity_bytes(volume["emptyDir"].get("sizeLimit", "64Mi")))]
            host = self.workdir / "volumes" / "emptydir" / volume["name"]
            if not host.exists():
                host.mkdir(parents=True)
                _own(host, 0, self._group(), SCRATCH_MODE)
            return ["--mount", f"type=bind,src={host},dst={path}"]
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            host = self.workdir / "volumes" / "configmap" / name
            if not host.exists():
                host.mkdir(parents=True)
                for key, text in self.config_maps[name].items():
                    (host / key).write_text(text)
                    _own(host / key, 0, self._group(), 0o644)
                _own(host, 0, self._group(), 0o755)
            return ["--mount", f"type=bind,src={host},dst={path},readonly"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            host = self.claims[claim["claimName"]]
            if mount.get("subPath"):
                host = host / mount["subPath"]
                if not host.exists():  # the kubelet makes it, as root, with the mode of the volume's root
                    host.mkdir(parents=True)
                    _own(host, 0, self._group(), CLAIM_MODE)
            ro = read_only or claim.get("readOnly", False)
            return ["--mount", f"type=bind,src={host},dst={path}" + (",readonly" if ro else "")]
        raise AssertionError(f"volume {volume['name']}: this runner knows emptyDir, configMap and claims only")

    # --- the pod's network namespace
    def _network_args(self) -> list[str]:
        if self.network == "host":
            return ["--network", "host"]
        if not self._pause:
            self._network = f"mf-pod-{uuid.uuid4().hex[:8]}"
            docker("network", "create", "--internal", self._network)
            self._pause = f"{self._network}-pause"
            docker("run", "--detach", "--name", self._pause, "--network", self._network, "--hostname", self.hostname,
                   "--user", "10001:10001", "--read-only", "--cap-drop", "ALL", "--entrypoint", "python3",
                   image_name("operator"), "-c", "import signal; signal.pause()")  # fmt: skip
        return ["--network", f"container:{self._pause}"]

    @property
    def ip(self) -> str:
        """The pod's IP (on the test's network); 127.0.0.1 with network="host"."""
        if self.network == "host":
            return "127.0.0.1"
        assert self._pause, "no container of the pod has started"
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return docker("inspect", "--format", template, self._pause).stdout.strip()

    # --- a container
    def container(self, name: str) -> dict[str, Any]:
        every = [*self.pod.get("initContainers", []), *self.pod["containers"]]
        return next(c for c in every if c["name"] == name)

    def _env_args(self, container: dict[str, Any]) -> list[str]:
        args: list[str] = []
        env = dict(self.extra_env)
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            source = entry["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[entry["name"]] = self.secrets[ref["name"]][ref["key"]]
            elif "fieldRef" in source:
                field_path = source["fieldRef"]["fieldPath"]
                match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", field_path)
                if match:
                    env[entry["name"]] = (self.metadata.get(match.group(1)) or {}).get(match.group(2), "")
                else:
                    env[entry["name"]] = self.metadata[field_path.split(".", 1)[1]]
        for key in env:
            args += ["--env", key]  # values through the environment, never argv (a Secret's among them)
        self._env = env
        return args

    def _security_args(self, container: dict[str, Any]) -> list[str]:
        pod = self.pod.get("securityContext") or {}
        own = container.get("securityContext") or {}
        user = own.get("runAsUser", pod.get("runAsUser"))
        group = own.get("runAsGroup", pod.get("runAsGroup", user))
        assert user is not None and user != 0, "every rendered pod runs as a non-root UID"
        args = ["--user", f"{user}:{group}"]
        for extra in [pod.get("fsGroup"), *(pod.get("supplementalGroups") or [])]:
            if extra is not None:
                args += ["--group-add", str(extra)]
        capabilities = own.get("capabilities") or {}
        args += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
        args += [f"--cap-add={c}" for c in capabilities.get("add", [])]
        if own.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if own.get("readOnlyRootFilesystem"):
            args += ["--read-only"]
        assert not own.get("privileged"), "no rendered container is privileged"
        return args

    def start(self, name: str, image: str | None = None, command: list[str] | None = None) -> str:
        """Start container `name` of the pod (detached); returns the Docker container's name."""
        container = self.container(name)
        cid = f"mf-{name}-{uuid.uuid4().hex[:8]}"
        args = ["run", "--detach", "--name", cid, *self._network_args()]
        args += self._security_args(container)
        for mount in container.get("volumeMounts", []):
            args += self._mount_args(mount)
        termination = self.termination_file(name)
        termination.touch()
        os.chmod(termination, 0o666)  # the kubelet's file: writable by the container's user
        message_path = container.get("terminationMessagePath", "/dev/termination-log")
        args += ["--mount", f"type=bind,src={termination},dst={message_path}"]
        if self.service_account is not None:  # what the kubelet projects for automountServiceAccountToken
            args += ["--mount", f"type=bind,src={self.service_account},dst={SERVICE_ACCOUNT_DIR},readonly"]
        args += self._env_args(container)
        argv = command if command is not None else [*container.get("command", []), *container.get("args", [])]
        if argv:
            args += ["--entrypoint", argv[0]]
        args += [image or container["image"], *argv[1:]]
        # The container's env reaches `docker run` through the CLI's environment (`--env NAME`: no value in
        # argv); the CLI's own settings stay this machine's (the container's HOME is not the CLI's).
        config = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
        docker(*args, env={**os.environ, **self._env, "DOCKER_CONFIG": config})
        self.names.append(cid)
        return cid

    def termination_file(self, name: str) -> Path:
        return self.workdir / f"termination-{name}"

    def termination_message(self, name: str) -> dict[str, Any]:
        text = self.termination_file(name).read_text()
        assert text, f"container {name} wrote no termination message"
        return dict(json.loads(text))

    # --- what a kubelet sees of a running container
    def wait(self, cid: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid).stdout.split()
            if state[0] == "exited":
                return int(state[1])
            time.sleep(1)
        raise AssertionError(f"container {cid} still runs after {timeout:.0f} s:\n{self.logs(cid)[-3000:]}")

    def wait_running(self, cid: str) -> bool:
        """Whether the container still runs (False once it exited)."""
        return docker("inspect", "--format", "{{.State.Status}}", cid).stdout.strip() in ("created", "running")

    def oom_killed(self, cid: str) -> bool:
        return docker("inspect", "--format", "{{.State.OOMKilled}}", cid).stdout.strip() == "true"

    def logs(self, cid: str) -> str:
        result = docker("logs", cid, check=False)
        return result.stdout + result.stderr

    def exec(self, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return docker("exec", cid, *argv, check=False)

    def signal(self, cid: str, signal: str) -> None:
        docker("kill", "--signal", signal, cid)

    def remove(self) -> None:
        for cid in [*self.names, *([self._pause] if self._pause else [])]:
            docker("rm", "--force", cid, check=False)
        self.names.clear()
        if self._network:
            docker("network", "rm", self._network, check=False)
        self._pause = self._network = ""
        # The containers wrote as 10001 into directories of this test: make them removable by pytest.
        with contextlib.suppress(OSError):
            shutil.chown(self.workdir, os.getuid(), os.getgid())


def wait_http(pod: PodRunner, cid: str, url: str, timeout: float) -> None:
    """Until `url` answers 200 (a startup probe), failing with the container's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        assert pod.wait_running(cid), f"{cid} exited:\n{pod.logs(cid)[-20000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} not answering after {timeout:.0f} s:\n{pod.logs(cid)[-4000:]}"
            time.sleep(1)


def http_json(url: str, body: dict[str, Any] | None = None, key: str | None = None, timeout: float = 120) -> Any:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=timeout) as response:
        return json.loads(response.read())


def image_name(name: str) -> str:
    """The image `make images` tagged (REGISTRY/NAME:TAG; MODELFORGE_IMAGE_REGISTRY and _TAG override)."""
    registry = os.environ.get("MODELFORGE_IMAGE_REGISTRY", "ghcr.io/modelforge")
    return f"{registry}/{name}:{os.environ.get('MODELFORGE_IMAGE_TAG', '0.1.0')}"

"""A kind cluster built here, offline: `python -m tests.e2e.kindcluster build|up|down|status|kubeconfig|load`
(`up IMAGE...` also loads those images into the worker).

No image registry is reachable from these machines, so everything a kind node runs is built here from Debian
packages and Go modules (../shared/REFERENCE.md, "kind offline on these machines", has the measured recipe):

- binaries: the kind CLI; kubelet, kubeadm, kubectl, kube-proxy (and the control plane's kube-apiserver,
  kube-controller-manager, kube-scheduler and etcd, shared with tests/cluster); CoreDNS, crictl and the
  local-path provisioner from their modules; pause from the kubernetes module's C source;
- the node's base image: a debootstrap rootfs (systemd, containerd, runc, the CNI plugins from Debian) with
  kind's own base files from its module, `docker import`ed;
- the images kubeadm and kind ask for, under the exact names they ask for (registry.k8s.io/...);
- the node image, assembled as `kind build node-image` would, without its registry pulls.

Everything is cached under $MODELFORGE_CACHE/kind/<versions>: a second build is a no-op. Four things differ
from a stock kind on these VMs (no CAP_SYS_RESOURCE, cgroup v1): a `docker` wrapper first in PATH turns
kind's `--privileged` into the equivalent capability set; the node's entrypoint remounts the cgroup
controllers read-write; containerd clamps oom_score_adj (`restrict_oom_score_adj`); the kubelet is told
to accept cgroup v1 (`failCgroupV1: false`). The CNI: kind's own kindnetd is not served by the Go module
proxy, so the cluster disables the default CNI and does kindnetd's job itself once the nodes have joined
(`network()`): each node gets a bridge + host-local configuration (Debian's containernetworking-plugins) for
the pod range kube-controller-manager gave it, a route to every other node's range, and masquerading for
traffic that leaves the pod network.

The cluster is a control plane and one worker: the control plane keeps its taint, so everything the tests run
lands on the worker, the one real kubelet the project's images are loaded into (loading the 6.6 GB trainer
image costs ~150 s a node); the control plane node still runs CoreDNS, so Service DNS and pod traffic cross
nodes. `kubectl drain` of the worker is possible without draining the API server.

Nothing in the cluster may reach beyond this machine (`egress_guard()`): every node rejects, and counts,
packets for addresses outside loopback, the pod and Service ranges and the kind network; CoreDNS answers for
the cluster and forwards nothing. `egress_report()` reads the counts; the e2e asserts they are zero.

Only the standard library: it runs before any virtualenv exists, like tests/cluster/controlplane.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster import controlplane as cp

ROOT = Path(__file__).resolve().parents[2]
KIND_VERSION = "v0.32.0"
COREDNS_VERSION = "v1.14.2"  # what kubeadm v1.36 deploys
CRICTL_VERSION = "v1.36.0"
LOCAL_PATH_VERSION = "v0.0.30"  # the newest the Go module proxy serves (kind 0.32 ships a v0.0.34 build)
ETCD_TAG = cp.ETCD_VERSION.removeprefix("v") + "-0"  # the control plane tier's etcd; kubeadm told to use it
PAUSE = "registry.k8s.io/pause:3.10"  # kind's containerd sandbox_image (not kubeadm's 3.10.x)
CLUSTER = os.environ.get("MODELFORGE_KIND_CLUSTER", "modelforge-e2e")
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"  # kind's default
WORKER = f"{CLUSTER}-worker"
# The node's packages (Debian 12): kind's base image list, with Debian's containerd, runc and CNI plugins.
NODE_PACKAGES = (
    "systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,"
    "fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins,"
    "socat"
)
REVISION = 2  # bump when the node image's recipe changes
KUBE_NODE_COMMANDS = ("kubelet", "kubeadm", "kubectl", "kube-proxy")


def _log(msg: str) -> None:
    print(f"[kind] {msg}", flush=True)


def versions_key() -> str:
    return f"kind-{KIND_VERSION}_k8s-{cp.KUBERNETES_VERSION}_etcd-{cp.ETCD_VERSION}"


def cache_dir() -> Path:
    return cp.cache_root() / "kind" / versions_key()


def bin_dir() -> Path:
    return cache_dir() / "bin"


def recipe_hash() -> str:
    recipe = [versions_key(), COREDNS_VERSION, CRICTL_VERSION, LOCAL_PATH_VERSION, NODE_PACKAGES, str(REVISION),
              (ROOT / "tests" / "data" / "kind" / "storage.yaml").read_text()]  # fmt: skip
    return hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:10]


def node_image() -> str:
    return f"modelforge.local/kind-node:{cp.KUBERNETES_VERSION}-{recipe_hash()}"


def base_image() -> str:
    return f"modelforge.local/kind-base:bookworm-{recipe_hash()}"


def docker_cli() -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "docker.sh"), "cli"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    return out.stdout.strip() or "docker"


def _docker(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([docker_cli(), *args], input=stdin, capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"[kind] docker {' '.join(args[:4])} failed: {proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def _image_exists(name: str) -> bool:
    return _docker("image", "inspect", name, check=False).returncode == 0


# ------------------------------------------------------------------------------------------------ binaries
def _module_dir(module: str, env: dict[str, str]) -> Path:
    """Where the Go module cache holds `module` (downloaded from the proxy if needed)."""
    return Path(json.loads(cp._run(["go", "mod", "download", "-json", module], env=env))["Dir"])


def _go_install(module: str, dest: Path, name: str, work: Path, env: dict[str, str]) -> None:
    t0 = time.monotonic()
    genv = dict(env, GOBIN=str(work / "gobin"))
    cp._run(["go", "install", "-trimpath", "-ldflags", "-s -w", module], env=genv)
    shutil.move(str(work / "gobin" / Path(module.split("@")[0]).name), dest / name)
    _log(f"built {name} in {time.monotonic() - t0:.0f} s")


def _build_pause(dest: Path, env: dict[str, str]) -> None:
    source = _module_dir(f"k8s.io/kubernetes@{cp.KUBERNETES_VERSION}", env) / "build" / "pause" / "linux" / "pause.c"
    cp._run(["gcc", "-Os", "-static", "-o", str(dest / "pause"), str(source)])


def build_binaries() -> Path:
    dest = bin_dir()
    wanted = ("kind", *KUBE_NODE_COMMANDS, *cp.KUBE_COMMANDS, "etcd", "coredns", "crictl", "local-path-provisioner",
              "pause")  # fmt: skip
    missing = [b for b in wanted if not (dest / b).exists()]
    if not missing:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    shared = cp.build()  # kube-apiserver, kube-controller-manager, kube-scheduler, etcd: the control plane tier's
    for name in (*cp.KUBE_COMMANDS, "etcd"):
        if name in missing:
            shutil.copy2(shared / name, dest / name)
    env = cp._go_env()
    t0 = time.monotonic()
    _log(f"building {', '.join(b for b in missing if b not in (*cp.KUBE_COMMANDS, 'etcd'))} into {dest}")
    with tempfile.TemporaryDirectory(prefix="modelforge-kind-build-") as tmp:
        work = Path(tmp)
        stage = work / "out"
        stage.mkdir()
        if "kind" in missing:
            _go_install(f"sigs.k8s.io/kind@{KIND_VERSION}", stage, "kind", work, env)
        if any(c in missing for c in KUBE_NODE_COMMANDS):
            cp._build_kubernetes(stage, work, env, KUBE_NODE_COMMANDS)
        if "coredns" in missing:
            _go_install(f"github.com/coredns/coredns@{COREDNS_VERSION}", stage, "coredns", work, env)
        if "crictl" in missing:
            _go_install(f"sigs.k8s.io/cri-tools/cmd/crictl@{CRICTL_VERSION}", stage, "crictl", work, env)
        if "local-path-provisioner" in missing:
            _go_install(f"github.com/rancher/local-path-provisioner@{LOCAL_PATH_VERSION}", stage,
                        "local-path-provisioner", work, env)  # fmt: skip
        if "pause" in missing:
            _build_pause(stage, env)
        for name in missing:
            if (stage / name).exists():
                shutil.move(str(stage / name), dest / name)
    _log(f"binaries built in {time.monotonic() - t0:.0f} s")
    return dest


# ---------------------------------------------------------------------------------------------- base image
ENTRYPOINT_WRAPPER = """#!/bin/bash
# Before kind's own entrypoint (entrypoint.kind): the node container is not --privileged on these VMs (the
# docker wrapper gives it the equivalent capabilities), so Docker mounted the cgroup v1 hierarchies
# read-only. systemd, the kubelet and containerd need them writable, as --privileged would have them.
for m in $(findmnt -lun -t cgroup -o target); do
  mount -o remount,bind,rw "$m" || echo "WARN: could not remount $m read-write" >&2
done
exec /usr/local/bin/entrypoint.kind "$@"
"""


def cni_config(pod_cidr: str) -> dict:
    """A node's CNI: a bridge with host-local addresses from the node's pod range (masquerading is the node's
    own rule, `network()`, so traffic between pods of different nodes keeps its source address)."""
    return {
        "cniVersion": "0.4.0",
        "name": "modelforge-bridge",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }  # fmt: skip


def _mirror() -> str:
    for sources in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def build_base() -> str:
    image = base_image()
    if _image_exists(image):
        return image
    if os.geteuid() != 0:
        raise SystemExit("[kind] building the node's base image needs root (debootstrap, chroot)")
    t0 = time.monotonic()
    files = _module_dir(f"sigs.k8s.io/kind@{KIND_VERSION}", cp._go_env()) / "images" / "base" / "files"
    with tempfile.TemporaryDirectory(prefix="modelforge-kind-base-") as tmp:
        root = Path(tmp) / "rootfs"
        _log(f"debootstrap of the node's rootfs ({len(NODE_PACKAGES.split(','))} packages) ...")
        cp._run(["debootstrap", "--variant=minbase", f"--include={NODE_PACKAGES}", "bookworm", str(root), _mirror()])
        # kind's base files, as its Dockerfile copies them
        for sub in ("usr/local/bin", "kind/bin", "etc/containerd", "etc/default", "etc/sysctl.d",
                    "etc/systemd/system/kubelet.service.d", "LICENSES"):  # fmt: skip
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copytree(files / "kind", root / "kind", dirs_exist_ok=True)
        for path in (root / "kind").rglob("*"):
            path.chmod(0o755 if path.is_dir() or path.parent.name == "bin" else 0o644)
        (root / "kind").chmod(0o755)
        shutil.copy2(files / "usr/local/bin/clean-install", root / "usr/local/bin/clean-install")
        shutil.copy2(files / "usr/local/bin/entrypoint", root / "usr/local/bin/entrypoint.kind")
        (root / "usr/local/bin/entrypoint").write_text(ENTRYPOINT_WRAPPER)
        for name in ("clean-install", "entrypoint.kind", "entrypoint"):
            (root / "usr/local/bin" / name).chmod(0o755)
        shutil.copy2(files / "etc/crictl.yaml", root / "etc/crictl.yaml")
        for sub in ("etc/containerd", "etc/default", "etc/sysctl.d", "etc/systemd/system/kubelet.service.d"):
            for f in (files / sub).iterdir():
                if f.is_file():
                    shutil.copy2(f, root / sub / f.name)
        for f in (files / "etc/systemd/system").iterdir():
            if f.is_file():
                shutil.copy2(f, root / "etc/systemd/system" / f.name)
        config = root / "etc/containerd/config.toml"
        # Nothing on these VMs may lower oom_score_adj: containerd clamps it (else every Guaranteed pod fails
        # FailedCreatePodSandBox "can't get final child's PID from pipe").
        config.write_text(config.read_text().replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true"))
        for name in ("containerd", "ctr", "containerd-shim-runc-v2"):  # kind expects them in /usr/local/bin
            (root / "usr/local/bin" / name).symlink_to(f"/usr/bin/{name}")
        (root / "opt/cni/bin").mkdir(parents=True)
        for plugin in ("host-local", "loopback", "ptp", "portmap", "bridge"):
            shutil.copy2(root / "usr/lib/cni" / plugin, root / "opt/cni/bin" / plugin)
        (root / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)  # each node's config: network()
        # kind's Dockerfile's cleanup
        cleanup = (
            "find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete; "
            "rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* "
            "/lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* "
            "/lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; "
            "echo ReadKMsg=no >> /etc/systemd/journald.conf; ln -sf /usr/lib/systemd/systemd /sbin/init; "
            "systemctl enable kubelet.service containerd.service undo-mount-hacks.service; "
            "systemctl mask systemd-binfmt.service; mkdir -p /etc/kubernetes/manifests; "
            # the runtime spec containerd starts containers from: kind's mount hook, no rlimits
            "ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + "
            '{"path": "/kind/bin/mount-product-files.sh"}\' | jq \'del(.process.rlimits)\' '
            "> /etc/containerd/cri-base.json"
        )
        cp._run(["chroot", str(root), "bash", "-c", cleanup])
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        (root / "etc/machine-id").write_text("")
        rootfs = f"{image}-rootfs"
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([docker_cli(), "import", "-", rootfs], stdin=tar.stdout, capture_output=True,
                                  check=False)  # fmt: skip
        tar.stdout.close()  # type: ignore[union-attr]
        tar.wait()
        if imported.returncode != 0:
            raise SystemExit(f"[kind] docker import failed: {imported.stderr.decode(errors='replace')}")
    dockerfile = (f"FROM {rootfs}\nENV container=docker\nSTOPSIGNAL SIGRTMIN+3\n"
                  'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n')  # fmt: skip
    _docker("build", "-q", "-t", image, "-", stdin=dockerfile.encode())
    _docker("rmi", rootfs)
    _log(f"built {image} in {time.monotonic() - t0:.0f} s")
    return image


# ------------------------------------------------------------------------------------------- node images
def _component_image(name: str, base: str, binary: Path, dest: str, entrypoint: str | None = None,
                     user: str | None = None) -> None:  # fmt: skip
    if _image_exists(name):
        return
    with tempfile.TemporaryDirectory(prefix="modelforge-kind-img-") as tmp:
        shutil.copy2(binary, Path(tmp) / binary.name)
        lines = [f"FROM {base}", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                 f"COPY {binary.name} {dest}"]  # fmt: skip
        if entrypoint:
            lines.append(f"ENTRYPOINT {entrypoint}")
        if user:
            lines.append(f"USER {user}")
        (Path(tmp) / "Dockerfile").write_text("\n".join(lines) + "\n")
        cp._run([docker_cli(), "build", "-q", "-t", name, tmp])


def component_images(bins: Path, base: str) -> list[str]:
    """The images kubeadm, kind's containerd and the storage manifest ask for, by the names they use."""
    k = cp.KUBERNETES_VERSION
    images = []
    for c in cp.KUBE_COMMANDS:
        _component_image(f"registry.k8s.io/{c}:{k}", "scratch", bins / c, f"/usr/local/bin/{c}")
        images.append(f"registry.k8s.io/{c}:{k}")
    # kube-proxy programs iptables/nftables: on the node's own base (it has them)
    _component_image(f"registry.k8s.io/kube-proxy:{k}", base, bins / "kube-proxy", "/usr/local/bin/kube-proxy")
    _component_image(f"registry.k8s.io/etcd:{ETCD_TAG}", "scratch", bins / "etcd", "/usr/local/bin/etcd")
    _component_image(f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}", "scratch", bins / "coredns", "/coredns",
                     '["/coredns"]')  # fmt: skip
    _component_image(PAUSE, "scratch", bins / "pause", "/pause", '["/pause"]', "65535:65535")
    provisioner = f"modelforge.local/local-path-provisioner:{LOCAL_PATH_VERSION}"
    _component_image(provisioner, "scratch", bins / "local-path-provisioner", "/usr/local/bin/local-path-provisioner")
    helper = "modelforge.local/local-path-helper:bookworm"  # runs the storage's setup/teardown shell scripts
    _docker("tag", base, helper)
    images += [f"registry.k8s.io/kube-proxy:{k}", f"registry.k8s.io/etcd:{ETCD_TAG}",
               f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}", PAUSE, provisioner, helper]  # fmt: skip
    return images


def build() -> str:
    """Everything the cluster needs; returns the node image (a no-op when it exists)."""
    image = node_image()
    if _image_exists(image) and (bin_dir() / "kind").exists():
        _log(f"node image {image} up to date (nothing to build)")
        return image
    t0 = time.monotonic()
    bins = build_binaries()
    base = build_base()
    images = component_images(bins, base)
    name = f"modelforge-kind-nodebuild-{os.getpid()}"
    _docker("run", "-d", "--name", name, "--network", "none", "--entrypoint", "sleep", base, "infinity")
    try:
        for b in ("kubelet", "kubeadm", "kubectl"):
            _docker("cp", str(bins / b), f"{name}:/usr/bin/{b}")
        _docker("cp", str(bins / "crictl"), f"{name}:/usr/local/bin/crictl")
        _docker("exec", name, "chmod", "0755", "/usr/bin/kubelet", "/usr/bin/kubeadm", "/usr/bin/kubectl")
        _docker("exec", "-i", name, "sh", "-c", "cat > /kind/version", stdin=cp.KUBERNETES_VERSION.encode())
        _docker("exec", name, "mkdir", "-p", "/kind/manifests")
        storage = (ROOT / "tests" / "data" / "kind" / "storage.yaml").read_text()
        _docker("exec", "-i", name, "sh", "-c", "cat > /kind/manifests/default-storage.yaml", stdin=storage.encode())
        _docker("exec", "-d", name, "containerd")
        deadline = time.monotonic() + 30
        while _docker("exec", name, "ctr", "version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("[kind] containerd did not start in the node image build")
            time.sleep(0.5)
        saved = subprocess.Popen([docker_cli(), "save", *images], stdout=subprocess.PIPE)
        imported = subprocess.run([docker_cli(), "exec", "-i", name, "ctr", "--namespace=k8s.io", "images", "import",
                                   "--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack",
                                   "--digests", "-"], stdin=saved.stdout, capture_output=True, check=False)  # fmt: skip
        saved.stdout.close()  # type: ignore[union-attr]
        saved.wait()
        if imported.returncode != 0 or saved.returncode != 0:
            raise SystemExit(f"[kind] importing the images into the node failed: {imported.stderr.decode()[-2000:]}")
        _docker("exec", name, "pkill", "containerd", check=False)
        time.sleep(2)
        _docker("commit", "--change", 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]', name, image)
    finally:
        _docker("rm", "-f", "-v", name, check=False)
    _log(f"built {image} in {time.monotonic() - t0:.0f} s")
    return image


# ------------------------------------------------------------------------------------------- the cluster
DOCKER_WRAPPER = """#!/bin/bash
# The docker CLI as kind calls it, on VMs whose capability bounding set lacks CAP_SYS_RESOURCE: Docker 20.10's
# `--privileged` asks runc for every capability and fails ("unable to apply caps"). `run --privileged` becomes
# the equivalent set (the node's entrypoint remounts the cgroup controllers read-write); `exec --privileged`
# becomes a plain exec (it inherits the node container's capabilities); kind's /lib/modules volume is dropped
# when this machine has none.
real=%(real)s
if [ "${1:-}" = run ]; then
  in=("$@"); out=(); i=0
  while [ $i -lt ${#in[@]} ]; do
    a=${in[$i]}
    case "$a" in
      --privileged)
        out+=(--cap-add=ALL --cap-drop=SYS_RESOURCE --security-opt=systempaths=unconfined
              "--device-cgroup-rule=a *:* rwm" --device=/dev/kmsg) ;;
      --volume|-v)
        v=${in[$((i+1))]}; i=$((i+1))
        if [ "${v%%%%:*}" = /lib/modules ] && [ ! -d /lib/modules ]; then :; else out+=("$a" "$v"); fi ;;
      *) out+=("$a") ;;
    esac
    i=$((i+1))
  done
  set -- "${out[@]}"
elif [ "${1:-}" = exec ]; then
  out=(); for a in "$@"; do [ "$a" = --privileged ] || out+=("$a"); done
  set -- "${out[@]}"
fi
exec "$real" "$@"
"""


def _wrapper_dir() -> Path:
    shim = cache_dir() / "shim"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "docker").write_text(DOCKER_WRAPPER % {"real": docker_cli()})
    (shim / "docker").chmod(0o755)
    return shim


def kind_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{_wrapper_dir()}:{bin_dir()}:{os.environ['PATH']}"}


def kubeconfig_path() -> Path:
    return cache_dir() / "run" / "kubeconfig"


CONFIG = f"""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true  # kindnetd is not served by the Go module proxy: network() does its job
  podSubnet: {POD_SUBNET}
  serviceSubnet: {SERVICE_SUBNET}
nodes:
- role: control-plane
- role: worker
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false  # kubelet >= 1.35 refuses cgroup v1 unless told (these VMs have cgroup v1)
- |
  kind: ClusterConfiguration
  etcd:
    local:
      imageTag: "{ETCD_TAG}"
"""


def _kind(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run([str(bin_dir() / "kind"), *args], env=kind_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"[kind] kind {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run([str(bin_dir() / "kubectl"), "--kubeconfig", str(kubeconfig_path()), *args], input=stdin,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    if check and proc.returncode != 0:
        raise SystemExit(f"[kind] kubectl {' '.join(args[:3])} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def _node_exec(node: str, script: str) -> str:
    return _docker("exec", "-i", node, "bash", "-euo", "pipefail", "-s", stdin=script.encode()).stdout.decode()


def _nodes() -> list[dict]:
    """Each node's name, pod range and address, once kube-controller-manager has given every node a range."""
    deadline = time.monotonic() + 120
    while True:
        items = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
        nodes = [{"name": n["metadata"]["name"], "cidr": n["spec"].get("podCIDR"),
                  "ip": next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")}
                 for n in items]  # fmt: skip
        if len(nodes) == 2 and all(n["cidr"] for n in nodes):
            return nodes
        if time.monotonic() > deadline:
            raise SystemExit(f"[kind] nodes without a pod range after 120 s: {nodes}")
        time.sleep(1)


def kind_subnets() -> list[str]:
    """The kind Docker network's subnets (IPv4 and, where Docker has it, IPv6): this run's own bridge."""
    out = _docker("network", "inspect", "kind", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}").stdout
    return out.decode().split()


def network() -> None:
    """kindnetd's job: each node's CNI config for its own pod range, routes to the other nodes' ranges, and
    masquerading for what leaves the pod network (the CNI's own ipMasq would also hide pod addresses from
    pods on other nodes)."""
    nodes = _nodes()
    for node in nodes:
        routes = "".join(f"ip route replace {o['cidr']} via {o['ip']}\n" for o in nodes if o is not node)
        config = json.dumps(cni_config(node["cidr"]), indent=1)
        _node_exec(
            node["name"],
            f"""
{routes}
iptables -t nat -C POSTROUTING -s {node["cidr"]} ! -d {POD_SUBNET} -j MASQUERADE 2>/dev/null ||
  iptables -t nat -A POSTROUTING -s {node["cidr"]} ! -d {POD_SUBNET} -j MASQUERADE
cat > /etc/cni/net.d/10-modelforge-bridge.conflist.tmp <<'JSON'
{config}
JSON
mv /etc/cni/net.d/10-modelforge-bridge.conflist.tmp /etc/cni/net.d/10-modelforge-bridge.conflist
""",
        )
    _log("network: " + ", ".join(f"{n['name']} {n['cidr']} via {n['ip']}" for n in nodes))


EGRESS_CHAIN = "MODELFORGE-EGRESS"
EGRESS_LIST = "modelforge-egress"


def egress_guard() -> None:
    """Every node rejects (and counts) packets it would send or forward beyond this machine's own networks:
    loopback, the pod and Service ranges, the kind network. The e2e asserts the counts stay zero."""
    # 224.0.0.0/24 and ff00::/8: multicast that never leaves a link (IGMP and MLD reports of new interfaces).
    allowed = {4: ["127.0.0.0/8", POD_SUBNET, SERVICE_SUBNET, "224.0.0.0/24"], 6: ["::1/128", "fe80::/10", "ff00::/8"]}
    for subnet in kind_subnets():
        allowed[6 if ":" in subnet else 4].append(subnet)
    for node in (n["name"] for n in _nodes()):
        script = []
        for version, tool in ((4, "iptables"), (6, "ip6tables")):
            rules = [f"{tool} -N {EGRESS_CHAIN} 2>/dev/null || {tool} -F {EGRESS_CHAIN}"]
            rules += [f"{tool} -A {EGRESS_CHAIN} -d {net} -j RETURN" for net in allowed[version]]
            # The destinations, for the report (xt_recent keeps the last 100 addresses it saw).
            rules.append(f"{tool} -A {EGRESS_CHAIN} -m recent --name {EGRESS_LIST}{version} --rdest --set")
            rules.append(f"{tool} -A {EGRESS_CHAIN} -j REJECT")
            for hook in ("OUTPUT", "FORWARD"):
                rules.append(f"{tool} -C {hook} -j {EGRESS_CHAIN} 2>/dev/null || {tool} -I {hook} 1 -j {EGRESS_CHAIN}")
            script.append(f"if {tool} -L -n >/dev/null 2>&1; then\n" + "\n".join(rules) + "\nfi")  # no IPv6: none
        _node_exec(node, "\n".join(script))
    # CoreDNS answers for the cluster and forwards nothing: a lookup of a hub fails at once, in the cluster.
    corefile = json.loads(kubectl("get", "configmap", "coredns", "-n", "kube-system", "-o", "json"))
    lines = corefile["data"]["Corefile"].splitlines()
    kept, depth = [], 0
    for line in lines:  # drop the `forward . /etc/resolv.conf { ... }` block
        if depth or line.strip().startswith("forward "):
            depth += line.count("{") - line.count("}")
            continue
        kept.append(line)
    if kept != lines:
        corefile["data"]["Corefile"] = "\n".join(kept) + "\n"
        kubectl("replace", "-f", "-", stdin=json.dumps(corefile))
        kubectl("rollout", "restart", "deployment/coredns", "-n", "kube-system")
    _log(f"egress guard: only {', '.join(allowed[4] + allowed[6])}")


def egress_report() -> dict[str, dict]:
    """Per node: packets rejected for leaving this machine's networks (IPv4 + IPv6), and where they went."""
    report = {}
    for node in (n["name"] for n in _nodes()):
        total, seen = 0, []
        # No guard, no evidence: a node whose OUTPUT and FORWARD do not pass through the chain fails the report.
        hooked = _docker("exec", node, "sh", "-c", f"iptables -C OUTPUT -j {EGRESS_CHAIN} && "
                         f"iptables -C FORWARD -j {EGRESS_CHAIN}", check=False)  # fmt: skip
        if hooked.returncode:
            raise SystemExit(f"[kind] {node} has no egress guard (python -m tests.e2e.kindcluster up installs it)")
        for version, tool in ((4, "iptables"), (6, "ip6tables")):
            out = _node_exec(node, f"{tool} -L {EGRESS_CHAIN} -v -n -x 2>/dev/null || true")
            total += sum(int(line.split()[0]) for line in out.splitlines() if "REJECT" in line)
            listed = _node_exec(node, f"cat /proc/net/xt_recent/{EGRESS_LIST}{version} 2>/dev/null || true")
            seen += [line.split()[0].removeprefix("src=") for line in listed.splitlines() if line.strip()]
        report[node] = {"packets": total, "to": seen}
    return report


def up() -> Path:
    """A fresh cluster (a leftover one of the same name is deleted: its node containers may be dead)."""
    image = build()
    t0 = time.monotonic()
    _kind("delete", "cluster", "--name", CLUSTER)
    kubeconfig_path().parent.mkdir(parents=True, exist_ok=True)
    config = cache_dir() / "run" / "kind-config.yaml"
    config.write_text(CONFIG)
    # No --wait: the nodes become Ready once network() has given them their CNI config.
    _kind("create", "cluster", "--name", CLUSTER, "--image", image, "--config", str(config),
          "--kubeconfig", str(kubeconfig_path()))  # fmt: skip
    server = json.loads(kubectl("config", "view", "--minify", "-o", "json"))["clusters"][0]["cluster"]["server"]
    if not server.startswith("https://127.0.0.1:"):
        raise SystemExit(f"[kind] the API server is published at {server}, not on this machine's loopback")
    # The guard first: CoreDNS and everything else start once network() gives the nodes their CNI, and a
    # CoreDNS started with kubeadm's Corefile forwards (its loop check included) through Docker's embedded DNS
    # to this machine's resolver (found by the guard's counters).
    egress_guard()
    network()
    kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s")
    kubectl("rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=180s")
    _log(f"cluster {CLUSTER} up in {time.monotonic() - t0:.0f} s: export KUBECONFIG={kubeconfig_path()}")
    return kubeconfig_path()


def _snapshotter(node: str) -> str:
    for line in _docker("exec", node, "containerd", "config", "dump").stdout.decode().splitlines():
        if line.strip().startswith("snapshotter = "):
            return line.split("=", 1)[1].strip().strip('"')
    return "overlayfs"


def load(images: list[str]) -> None:
    """Into the worker only (nothing the tests run is scheduled on the tainted control plane), as `kind load
    docker-image` does but streamed: `docker save` piped into the node's `ctr images import`, with no tar file
    on this machine's disk in between. Images the worker already has (same ID) are skipped; the others go in
    one archive, which carries a layer they share once (trainer-cpu and vllm-cpu share their ~4.9 GB torch
    layer: one stream of ~8 GB, not two of 6.6)."""
    snapshotter = _snapshotter(WORKER)
    t0 = time.monotonic()
    wanted = []
    for image in images:
        image_id = _docker("image", "inspect", "--format", "{{.Id}}", image).stdout.decode().strip()
        has = _docker("exec", WORKER, "crictl", "inspecti", "-o", "go-template", "--template", "{{.status.id}}", image,
                      check=False).stdout.decode().strip()  # fmt: skip
        if has == image_id:
            _log(f"{image}: the worker has it")
        else:
            wanted.append(image)
    if not wanted:
        return
    saved = subprocess.Popen([docker_cli(), "save", *wanted], stdout=subprocess.PIPE)
    imported = subprocess.run([docker_cli(), "exec", "-i", WORKER, "ctr", "--namespace=k8s.io", "images", "import",
                               "--all-platforms", "--digests", f"--snapshotter={snapshotter}", "-"],
                              stdin=saved.stdout, capture_output=True, check=False)  # fmt: skip
    saved.stdout.close()  # type: ignore[union-attr]
    saved.wait()
    if saved.returncode or imported.returncode:
        raise SystemExit(f"[kind] loading {', '.join(wanted)} into {WORKER} failed: {imported.stderr.decode()[-2000:]}")
    # The layers are unpacked into snapshots, which is what containers start from; their tar blobs in the content
    # store would only serve a re-unpack or a push. Dropping them halves the worker's disk (what containerd's
    # discard_unpacked_layers does for pulled images; this containerd's `ctr import` has no such flag).
    layers = set()
    for image in wanted:
        listed = _docker("image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}} {{end}}", image).stdout
        layers.update(listed.decode().split())
    removed = _docker("exec", WORKER, "ctr", "--namespace=k8s.io", "content", "rm", *sorted(layers)).stdout.split()
    _log(f"loaded {', '.join(wanted)} into {WORKER} in {time.monotonic() - t0:.0f} s "
         f"({len(removed)} layer blobs dropped once unpacked)")  # fmt: skip


def export_logs(dest: Path) -> Path:
    """Every node's kubelet, containerd and container logs (`kind export logs`), for a failed run."""
    _kind("export", "logs", str(dest), "--name", CLUSTER, timeout=600)
    return dest


def down() -> None:
    if (bin_dir() / "kind").exists():
        _kind("delete", "cluster", "--name", CLUSTER)
    _log(f"cluster {CLUSTER} deleted")


def status() -> int:
    if not (bin_dir() / "kind").exists():
        print(f"kind is not built: python -m tests.e2e.kindcluster build (cache: {cache_dir()})")
        return 1
    clusters = _kind("get", "clusters").split()
    print(f"kind {KIND_VERSION}, node image {node_image()}: clusters {clusters or 'none'}")
    return 0 if CLUSTER in clusters else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kindcluster", description=__doc__.split("\n\n")[0])
    commands = ["build", "binaries", "up", "down", "status", "kubeconfig", "load", "egress"]
    parser.add_argument("command", choices=commands)
    parser.add_argument("images", nargs="*", help="for load, and up: the images to load into the cluster's worker")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build())
    elif args.command == "binaries":  # the Go builds alone (no Docker needed): .ci/run starts them first
        print(build_binaries())
    elif args.command == "up":
        up()
        if args.images:
            load(args.images)
    elif args.command == "down":
        down()
    elif args.command == "status":
        return status()
    elif args.command == "kubeconfig":
        print(kubeconfig_path())
    elif args.command == "egress":
        report = egress_report()
        print(json.dumps(report))
        return 1 if any(r["packets"] for r in report.values()) else 0
    else:
        load(args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stand-in base images for building and running the compiled swarm with podman, offline from registries.

Why this exists: the test machines (and CI) run podman but cannot pull from any image
registry, while Debian's archive, PyPI and npm are reachable. So the images the
Dockerfiles start FROM (``python:*-slim``, ``node:*-slim``) and the Redis image the
compose file names are built here from a ``debootstrap``'ed Debian, and handed to the
Dockerfiles through their base-image build arguments (PYTHON_IMAGE, NODE_IMAGE); the
Redis one is tagged with the very name the compose file uses, so podman finds it
locally and never tries to pull.

Every step is cached by image tag: a step whose tag exists is skipped, so a second
run costs a few ``podman image exists`` calls. The tags carry a recipe version
(:data:`RECIPE`): change a recipe, bump it.

Run by hand (what the container test does first)::

    python -m tests.containers.standins          # build what is missing, print the tags

Needs root, ``podman`` (with ``runc``: see :func:`engine_env`) and ``debootstrap``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

#: Bumped whenever a recipe below changes, so cached images of an older recipe are not reused.
RECIPE = "1"
SUITE = "bookworm"
MIRROR = os.environ.get("SWARM_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PREFIX = "localhost/swarm-standin"
BASE_TAG = f"{PREFIX}/bookworm-base:{RECIPE}"
PYTHON_TAG = f"{PREFIX}/python:{RECIPE}"
NODE_TAG = f"{PREFIX}/node:{RECIPE}"
#: The host's CA bundle, mounted into builds: the network here intercepts TLS, and pip/npm
#: inside a build must trust the same roots the host does.
HOST_CERTS = Path("/etc/ssl/certs")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class StandIns:
    python: str
    node: str | None
    redis: str

    def build_args(self) -> dict[str, str]:
        """The base-image build arguments of the compiled Dockerfiles."""
        args = {"PYTHON_IMAGE": self.python}
        if self.node is not None:
            args["NODE_IMAGE"] = self.node
        return args


class StandInError(RuntimeError):
    pass


def engine_env(base: Mapping[str, str] | None = None, conf_dir: Path | None = None) -> dict[str, str]:
    """The environment for podman (and podman-compose, which runs podman) on these machines.

    crun, podman's default runtime where both are installed, fails every container
    start here (``setrlimit RLIMIT_NOFILE: Operation not permitted``) and the default
    ulimits are what it trips on; runc with no default ulimits works. Rather than
    edit /etc/containers/containers.conf from a test, point ``CONTAINERS_CONF`` at a
    file of our own with those two settings; every podman that inherits this
    environment (the builds of ``swarm images build``, podman-compose's calls) uses it.
    """
    env = dict(os.environ if base is None else base)
    directory = conf_dir or Path(tempfile.gettempdir()) / "swarm-standin-conf"
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n')
    env["CONTAINERS_CONF"] = str(conf)
    return env


def run(cmd: Sequence[str], *, env: Mapping[str, str], stdin: bytes | None = None,
        timeout: float = 900, input_file: Path | None = None) -> str:
    """Run one command; on failure raise with its last stderr lines (what a reader needs)."""
    try:
        if input_file is not None:
            with input_file.open("rb") as fh:
                proc = subprocess.run(list(cmd), stdin=fh, capture_output=True, env=dict(env), timeout=timeout)
        else:
            proc = subprocess.run(list(cmd), input=stdin, capture_output=True, env=dict(env), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise StandInError(f"{' '.join(cmd[:3])} ... timed out after {timeout}s") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.decode(errors="replace").splitlines()[-15:])
        raise StandInError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout.decode(errors="replace")


def image_exists(tag: str, env: Mapping[str, str]) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], env=dict(env), capture_output=True).returncode == 0


def _build(tag: str, dockerfile: str, env: Mapping[str, str], *, context: Path | None = None,
           network: bool = False) -> None:
    """``podman build`` of an inline Dockerfile; ``network``: the RUN steps reach Debian's archive
    (host network, the host's CA roots mounted)."""
    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        ctx = context or Path(tmp)
        (Path(tmp) / "Dockerfile").write_text(dockerfile)
        cmd = ["podman", "build", "--format", "docker", "-t", tag, "-f", str(Path(tmp) / "Dockerfile")]
        if network:
            cmd += ["--network", "host", "-v", f"{HOST_CERTS}:{HOST_CERTS}:ro"]
        run([*cmd, str(ctx)], env=env)


def build_base(env: Mapping[str, str], log: "Log") -> None:
    """A minimal Debian root with Python 3 and the CA bundle, imported as an image.

    debootstrap's minbase variant is the smallest Debian that apt works in; python3
    and python3-venv give the Python stand-in its interpreter and pip; the Node
    stand-in reuses the same root (the host's node binary links only against libraries
    minbase has)."""
    if image_exists(BASE_TAG, env):
        return
    if shutil.which("debootstrap") is None:
        raise StandInError("debootstrap is not installed (apt-get install -y debootstrap)")
    with tempfile.TemporaryDirectory(prefix="standin-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} minbase (about a minute)")
        run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             SUITE, str(rootfs), MIRROR], env=env, timeout=1200)
        # apt's caches are of no use in an image
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        tarball = Path(tmp) / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], env=env)
        log(f"podman import -> {BASE_TAG}")
        run(["podman", "import", str(tarball), BASE_TAG], env=env)


def build_python(env: Mapping[str, str], log: "Log") -> None:
    """Shaped like the official python slim image: ``python`` and ``pip`` in /usr/local/bin.
    A venv at /usr/local gives exactly that without touching Debian's own Python."""
    if image_exists(PYTHON_TAG, env):
        return
    log(f"build {PYTHON_TAG}")
    _build(PYTHON_TAG, f"FROM {BASE_TAG}\nRUN python3 -m venv /usr/local\nENV PATH=/usr/local/bin:$PATH\n"
           'CMD ["python3"]\n', env)


def build_node(env: Mapping[str, str], log: "Log") -> bool:
    """The host's Node (Debian 12's own nodejs is 18; the runtime wants the host's 20+) and npm
    copied into /usr/local, ``npm``/``npx`` linked as in the official node image. False without a host node."""
    node = shutil.which("node")
    npm_dir = Path("/usr/lib/node_modules/npm")
    if node is None or not npm_dir.is_dir():
        return False
    if image_exists(NODE_TAG, env):
        return True
    log(f"build {NODE_TAG}")
    with tempfile.TemporaryDirectory(prefix="standin-node-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(Path(node).resolve(), ctx / "node")
        shutil.copytree(npm_dir, ctx / "npm", symlinks=True)
        _build(NODE_TAG, (
            f"FROM {BASE_TAG}\n"
            "COPY node /usr/local/bin/node\n"
            "COPY npm /usr/local/lib/node_modules/npm\n"
            "RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\\n"
            " && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\\n"
            " && node --version && npm --version\n"
            # npm does not read the system CA store: name the bundle (mounted in builds)
            f"ENV NODE_EXTRA_CA_CERTS={CA_BUNDLE}\n"
            'CMD ["node"]\n'), env, context=ctx)
    return True


def build_redis(tag: str, env: Mapping[str, str], log: "Log") -> None:
    """Debian's redis-server under the tag the compose file names (``redis:7.0.15-alpine``);
    /data is the working directory, as in the official image, so the append-only file lands
    in the compose file's volume."""
    if image_exists(tag, env):
        return
    log(f"build {tag}")
    _build(tag, (
        f"FROM {BASE_TAG}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends redis-server \\\n"
        " && rm -rf /var/lib/apt/lists/* && mkdir -p /data\n"
        "WORKDIR /data\n"
        'CMD ["redis-server"]\n'), env, network=True)


def fully_qualified(image: str) -> str:
    """``redis:7`` -> ``docker.io/library/redis:7``: the name podman resolves a short name to
    when it looks for a local image first."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


class Log:
    def __init__(self, stream: object = None) -> None:
        self.stream = stream or sys.stderr

    def __call__(self, message: str) -> None:
        print(f"stand-ins: {message}", file=self.stream, flush=True)  # type: ignore[call-overload]


def ensure(redis_image: str, env: Mapping[str, str], *, log: Log | None = None) -> StandIns:
    """Build what is missing; return the stand-ins' tags."""
    log = log or Log()
    if shutil.which("podman") is None:
        raise StandInError("podman is not installed (apt-get install -y podman runc)")
    build_base(env, log)
    build_python(env, log)
    has_node = build_node(env, log)
    redis_tag = fully_qualified(redis_image)
    build_redis(redis_tag, env, log)
    return StandIns(python=PYTHON_TAG, node=NODE_TAG if has_node else None, redis=redis_tag)


if __name__ == "__main__":
    print(ensure(sys.argv[1] if len(sys.argv) > 1 else "redis:7.0.15-alpine", engine_env()))

"""Build every image of a compiled swarm locally: ``swarm images build`` (:mod:`swarm.cli.images_cmds`).

What is built comes from the compiled compose file itself: every service with a
``build:`` is built with its context, Dockerfile, build args and additional contexts,
tagged with the service's ``image:`` (services sharing one image, like the registry
and the setup services, are built once). So the tags are the compose file's by
construction and ``docker compose up`` (or podman-compose) starts right after, without
building again.

How swarm gets into the images: the Python Dockerfiles ``pip install`` the
``swarm-gitops`` version they were compiled by, which need not be on any package
index. This module builds a wheel of the swarm that is running (``pip wheel --no-deps``
of the source tree its package was imported from; or ``--wheel``), serves that
wheel's directory over HTTP on 127.0.0.1 for the duration of the builds, and passes
``--network host --build-arg PIP_FIND_LINKS=http://127.0.0.1:<port>/`` (bound to the
loopback only, serving a temporary directory holding just the wheel, or the directory
``--wheel`` names); pip reads
``PIP_FIND_LINKS`` from the environment, and the Dockerfiles declare it as an ARG.
One mechanism for docker and podman alike (podman could mount a directory into a
build, docker cannot); the host network is also what lets the RUN steps reach the
package index through the host's proxy settings. For the same reason extra engine
arguments (a CA bundle mount, a proxy) are passed through untouched.

podman builds get ``--format docker``: in its default OCI format podman drops
``HEALTHCHECK``, and the compose file relies on the images' health checks.

Every engine command goes through :class:`Runner`; a failure raises
:class:`~swarm.errors.EngineError` with the command and the engine's last output lines.
"""

from __future__ import annotations

import collections
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Mapping, Sequence

from swarm.errors import EngineError, InvalidRequestError

ENGINES = ("docker", "podman")
PACKAGE = "swarm-gitops"
#: how many of a failed command's last output lines an error carries
TAIL_LINES = 25


@dataclass(frozen=True)
class ImageBuild:
    """One image to build: the compose services that use it and how their ``build:`` says to build it."""

    tag: str
    context: Path
    dockerfile: Path | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    contexts: Mapping[str, Path] = field(default_factory=dict)
    services: tuple[str, ...] = ()


class Runner:
    """Runs one command at a time, echoing its output to ``echo`` (None: quiet) and keeping the tail."""

    def __init__(self, echo: IO[str] | None = None, env: Mapping[str, str] | None = None) -> None:
        self.echo = echo
        self.env = dict(os.environ if env is None else env)

    def __call__(self, cmd: Sequence[str], *, what: str, cwd: Path | None = None) -> list[str]:
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        try:
            proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, env=self.env, text=True, errors="replace")
        except OSError as exc:
            raise EngineError(f"{what}: cannot run {cmd[0]}: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                if self.echo is not None:
                    self.echo.write(line)
                    self.echo.flush()
        if proc.returncode != 0:
            shown = "\n".join(f"  | {line}" for line in tail)
            raise EngineError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{shown}")
        return list(tail)


def _mapping(value: object, where: str) -> dict[str, str]:
    """A compose ``args``/``additional_contexts`` value: a mapping or a list of ``K=V``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep:
                raise InvalidRequestError(f"{where}: {item!r} is not KEY=VALUE")
            out[key] = val
        return out
    raise InvalidRequestError(f"{where}: expected a mapping or a list of KEY=VALUE")


def plan_builds(compose_file: Path) -> list[ImageBuild]:
    """The images of ``compose_file``'s services that have a ``build:``, one per tag, sorted by tag."""
    import yaml

    try:
        document = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidRequestError(f"{compose_file} does not exist: run `swarm compile` first "
                                  "(the compose target writes it)") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequestError(f"{compose_file}: cannot read it: {exc}") from exc
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        raise InvalidRequestError(f"{compose_file}: no services")
    base = compose_file.parent
    by_tag: dict[str, ImageBuild] = {}
    for name, service in sorted(services.items()):
        build = service.get("build") if isinstance(service, dict) else None
        if build is None:
            continue
        where = f"{compose_file}: services.{name}"
        if isinstance(build, str):
            build = {"context": build}
        tag = service.get("image")
        if not isinstance(tag, str) or not tag:
            raise InvalidRequestError(f"{where} builds an image but names no `image:` tag; recompile it with this "
                                      "swarm (`swarm compile`)")
        if "$" in tag:
            raise InvalidRequestError(f"{where}.image {tag!r} uses a variable; `swarm images build` needs literal tags")
        context = (base / str(build.get("context", "."))).resolve()
        dockerfile = build.get("dockerfile")
        item = ImageBuild(
            tag=tag,
            context=context,
            dockerfile=(context / str(dockerfile)) if dockerfile else None,
            args=_mapping(build.get("args"), f"{where}.build.args"),
            contexts={k: (base / v).resolve() for k, v in _mapping(build.get("additional_contexts"),
                                                                     f"{where}.build.additional_contexts").items()},
            services=(name,),
        )
        seen = by_tag.get(tag)
        if seen is None:
            by_tag[tag] = item
        elif (seen.context, seen.dockerfile, dict(seen.args), dict(seen.contexts)) != (
                item.context, item.dockerfile, dict(item.args), dict(item.contexts)):
            raise InvalidRequestError(f"{where}: image {tag!r} is also built by services.{seen.services[0]} "
                                      "from a different build")
        else:
            by_tag[tag] = ImageBuild(seen.tag, seen.context, seen.dockerfile, seen.args, seen.contexts,
                                     (*seen.services, name))
    if not by_tag:
        raise InvalidRequestError(f"{compose_file}: no service has a `build:`")
    return [by_tag[t] for t in sorted(by_tag)]


def source_tree() -> Path | None:
    """The source tree (with pyproject.toml naming swarm-gitops) the running ``swarm`` package comes from."""
    import tomllib

    import swarm

    root = Path(swarm.__file__).resolve().parent.parent
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("name") == PACKAGE else None


_WHEEL = re.compile(r"^swarm_gitops-([^-]+)-.*\.whl$")


def wheel_version(path: Path) -> str | None:
    match = _WHEEL.match(path.name)
    return match.group(1) if match else None


def build_wheel(runner: Runner, out_dir: Path, source: Path | None = None) -> Path:
    """``pip wheel --no-deps`` of the running swarm's source tree into ``out_dir``; the wheel's path."""
    from swarm import __version__

    source = source or source_tree()
    if source is None:
        raise InvalidRequestError(
            "the running swarm was not imported from a source tree (no pyproject.toml of swarm-gitops beside it), "
            f"so there is nothing to build a wheel of; pass --wheel PATH (a {PACKAGE} {__version__} wheel)")
    runner([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir), str(source)],
           what=f"building the {PACKAGE} wheel of {source}")
    wheels = sorted(p for p in out_dir.glob("swarm_gitops-*.whl") if wheel_version(p) == __version__)
    if not wheels:
        raise EngineError(f"pip wheel of {source} produced no {PACKAGE} {__version__} wheel in {out_dir} "
                          "(is the source tree's version the running one's?)")
    return wheels[-1]


def wheel_dir_of(wheel: Path, scratch: Path) -> Path:
    """A directory holding ``wheel`` (a .whl file) or ``wheel`` itself (a directory of wheels), checked."""
    from swarm import __version__

    if wheel.is_dir():
        found = [p for p in wheel.glob("swarm_gitops-*.whl") if wheel_version(p) == __version__]
        if not found:
            raise InvalidRequestError(f"--wheel {wheel}: no {PACKAGE} {__version__} wheel in it")
        return wheel
    if not wheel.is_file() or wheel_version(wheel) is None:
        raise InvalidRequestError(f"--wheel {wheel}: not a {PACKAGE} wheel file (swarm_gitops-<version>-*.whl)")
    if wheel_version(wheel) != __version__:
        raise InvalidRequestError(f"--wheel {wheel} is version {wheel_version(wheel)}, but the compiled Dockerfiles "
                                  f"of this swarm ({__version__}) pin {PACKAGE}=={__version__}")
    shutil.copy2(wheel, scratch / wheel.name)
    return scratch


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` read-only on 127.0.0.1:<free port> while the block runs; yields its URL.

    pip's ``--find-links`` reads the listing page's links, which is what
    :class:`http.server.SimpleHTTPRequestHandler` serves for a directory."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="swarm-wheel-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def build_command(engine: str, item: ImageBuild, build_args: Mapping[str, str], extra: Sequence[str]) -> list[str]:
    """The engine's command line for one image; ``build_args`` win over the compose file's ``args``."""
    cmd = [engine, "build", "--tag", item.tag, "--network", "host"]
    if engine == "podman":
        cmd += ["--format", "docker"]  # OCI format drops HEALTHCHECK
    if item.dockerfile is not None:
        cmd += ["--file", str(item.dockerfile)]
    for key, value in {**item.args, **build_args}.items():
        cmd += ["--build-arg", f"{key}={value}"]
    for name, path in item.contexts.items():
        cmd += ["--build-context", f"{name}={path}"]
    return [*cmd, *extra, str(item.context)]


def resolve_engine(engine: str | None) -> str:
    """``--engine``, else the first of docker, podman on PATH."""
    if engine is not None:
        if shutil.which(engine) is None:
            raise InvalidRequestError(f"--engine {engine}: {engine} is not on PATH")
        return engine
    for candidate in ENGINES:
        if shutil.which(candidate) is not None:
            return candidate
    raise InvalidRequestError("neither docker nor podman is on PATH (install one, or pass --engine)")


@dataclass(frozen=True)
class BuildResult:
    tags: list[str]
    wheel: Path


def build_images(
    builds: Sequence[ImageBuild],
    *,
    engine: str,
    runner: Runner,
    build_args: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    wheel: Path | None = None,
    log: IO[str] | None = None,
) -> BuildResult:
    """Build ``builds`` in order with ``engine``, with the running swarm's wheel reachable by pip."""
    with tempfile.TemporaryDirectory(prefix="swarm-images-") as tmp:
        scratch = Path(tmp)
        if wheel is None:
            if log is not None:
                print("swarm images: building the swarm-gitops wheel", file=log, flush=True)
            wheel_dir = scratch
            built = build_wheel(runner, scratch)
        else:
            wheel_dir = wheel_dir_of(wheel, scratch)
            built = wheel
        with serve_directory(wheel_dir) as url:
            args = {"PIP_FIND_LINKS": url, **(build_args or {})}
            tags: list[str] = []
            for i, item in enumerate(builds, 1):
                if log is not None:
                    print(f"swarm images: [{i}/{len(builds)}] {item.tag} ({', '.join(item.services)})",
                          file=log, flush=True)
                runner(build_command(engine, item, args, extra_args),
                       what=f"building {item.tag} (service {item.services[0]})")
                tags.append(item.tag)
        return BuildResult(tags=tags, wheel=built)

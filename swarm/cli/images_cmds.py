"""``swarm images build [COMPILED|SPEC] [--engine docker|podman] [--build-arg K=V ...] [--wheel PATH] [-- ENGINE ARGS]``.

Wiring only; the work is :mod:`swarm.images`. ``COMPILED`` is a ``compiled/<swarm>``
directory (or its docker-compose.yml); a ``SPEC`` (default ``specs/``, ``--env`` for an
overlay) names the swarm, whose ``--compiled-dir``/<swarm>[.<env>] must hold what the spec compiles to (a stale
directory is refused: the images would not be the spec's). Base images are build
arguments of the Dockerfiles (``--build-arg PYTHON_IMAGE=mirror.example/python:3.11-slim``,
``NODE_IMAGE``); whatever follows ``--`` is passed to every ``ENGINE build`` as is
(``-- -v /etc/ssl/certs:/etc/ssl/certs:ro``). The engine's output streams to stderr
(``--quiet``: only on failure); stdout gets the tags built, one a line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_OK, add_env_option
from swarm.errors import InvalidRequestError


def _build_arg(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("images", help="build the container images of a compiled swarm")
    sub = group.add_subparsers(dest="images_command", metavar="ACTION")
    sub.required = True
    build = sub.add_parser(
        "build", help="build every image of a compiled swarm, tagged as its compose file names them",
        usage="swarm images build [-h] [COMPILED|SPEC] [--engine {docker,podman}] [--build-arg K=V] "
              "[--wheel PATH] [--compiled-dir DIR] [--quiet] [-- ENGINE_ARGS ...]",
        description="Build every image the compiled compose file names, from a wheel of the running swarm. "
                    "Arguments after -- go to every `ENGINE build`.",
    )
    build.add_argument("source", nargs="?", type=Path, default=Path("specs"), metavar="COMPILED|SPEC",
                       help="a compiled/<swarm> directory (or its docker-compose.yml), or a spec (default specs/)")
    build.add_argument("--engine", choices=("docker", "podman"), default=None,
                       help="container engine (default: docker if on PATH, else podman)")
    build.add_argument("--build-arg", dest="build_args", type=_build_arg, action="append", default=[],
                       metavar="K=V", help="a build argument for every image (PYTHON_IMAGE, NODE_IMAGE, ...); repeatable")
    build.add_argument("--wheel", type=Path, default=None, metavar="PATH",
                       help="a swarm-gitops wheel (or a directory of wheels) to install instead of building one "
                            "from the running swarm's source tree")
    build.add_argument("--compiled-dir", type=Path, default=Path("compiled"), metavar="DIR",
                       help="with a SPEC: where its compiled output lives (default compiled/)")
    add_env_option(build)
    build.add_argument("--quiet", "-q", action="store_true", help="show the engine's output only when it fails")
    # `-- ENGINE ARGS`: split off by the dispatcher (swarm.cli.main) into args.passthrough
    build.set_defaults(handler=run_build, passthrough=[])


def _compose_file(args: argparse.Namespace) -> Path:
    source: Path = args.source
    direct = source if source.is_file() and source.name in ("docker-compose.yml", "compose.yml") else (
        source / "docker-compose.yml" if source.is_dir() and (source / "docker-compose.yml").is_file() else None)
    if direct is not None:
        if args.env is not None:
            raise InvalidRequestError("--env applies to a SPEC; a compiled directory is one environment already")
        return direct
    from swarm.compiler import compile_loaded
    from swarm.compiler.output import diff_output
    from swarm.spec.loader import load_spec_full

    compiled_dir: Path = args.compiled_dir
    loaded = load_spec_full(source, args.env)  # a bad spec: SpecError, printed by the dispatcher
    swarm = loaded.output_name  # <swarm> or <swarm>.<env>
    differing = diff_output(compile_loaded(loaded), compiled_dir, swarm)
    if differing:
        shown = "; ".join(differing[:5]) + ("; ..." if len(differing) > 5 else "")
        raise InvalidRequestError(f"{compiled_dir / swarm} is not what {source} compiles to ({shown}): "
                                  "run `swarm compile` first")
    return compiled_dir / swarm / "docker-compose.yml"


def run_build(args: argparse.Namespace) -> int:
    from swarm.images import Runner, build_images, plan_builds, resolve_engine

    extra = list(args.passthrough)
    engine = resolve_engine(args.engine)
    builds = plan_builds(_compose_file(args))
    runner = Runner(echo=None if args.quiet else sys.stderr)
    result = build_images(builds, engine=engine, runner=runner, build_args=dict(args.build_args),
                          extra_args=extra, wheel=args.wheel, log=sys.stderr)
    for tag in result.tags:
        print(tag)
    return EXIT_OK

"""``swarm secrets env [SPEC|COMPILED] [--out FILE] [--secret-file FILE] [--force]``: wiring only.

Writes the ``.env`` the compiled compose file needs (the variables and values come
from :mod:`swarm.secrets_env`). Where things come from:

* the swarm and its agents: ``COMPILED`` (a ``compiled/<swarm>`` directory; its
  ``registry.json`` is read, no spec load) or ``SPEC`` (default ``specs/``, with
  ``--env NAME``'s overlay);
* ``SWARM_REGISTRY_SECRET``: ``--secret-file`` (its first line) or the environment;
  it is never generated (every token derives from it, so a fresh one would silently
  invalidate tokens handed out before): without it the command fails (exit 2);
* ``SWARM_REDIS_PASSWORD``: the environment, else the one in the file being
  rewritten, else a new random one (Redis takes it from the compose file at start);
* ``SWARM_BUS_SECRET`` / ``SWARM_ADMIN_TOKEN``: copied when set in the environment.

The file (default ``.swarm/<swarm>.env``, ``.swarm/<swarm>.<env>.env`` for an environment: outside ``compiled/``, which ``swarm
compile`` owns and prunes, and ignored by git) is created with mode 0600 and
replaced atomically. A file that ``swarm secrets env`` did not write is refused
unless ``--force``. ``--out -`` writes to stdout; otherwise stdout gets one line
naming the file and how many variables it holds, never a value. Kept light: no
Redis client, no HTTP client, and with COMPILED no pydantic either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_OK, add_env_option
from swarm.errors import InvalidRequestError


def register(subparsers: Any) -> None:
    from swarm.cli.secrets_k8s_cmds import add_k8s

    group = subparsers.add_parser("secrets", help="print or write the secrets a compiled swarm needs")
    sub = group.add_subparsers(dest="secrets_command", metavar="ACTION")
    sub.required = True
    add_k8s(sub)
    env = sub.add_parser(
        "env", help="write the .env of the compose file (every agent token and bus password)",
        description="Write the .env the compiled compose file needs: SWARM_REGISTRY_SECRET, "
                    "SWARM_REDIS_PASSWORD, SWARM_AGENT_TOKEN_<ID> and SWARM_BUS_PASSWORD_<ID>.",
    )
    env.add_argument("source", nargs="?", type=Path, default=Path("specs"), metavar="SPEC|COMPILED",
                     help="a spec (default specs/) or a compiled/<swarm> directory")
    env.add_argument("--out", default=None, metavar="FILE",
                     help="where to write (default .swarm/<swarm>.env; '-' for stdout)")
    env.add_argument("--secret-file", type=Path, default=None, metavar="FILE",
                     help="read SWARM_REGISTRY_SECRET from FILE's first line instead of the environment")
    env.add_argument("--force", action="store_true",
                     help="overwrite FILE even if `swarm secrets env` did not write it")
    add_env_option(env)
    env.set_defaults(handler=run_env)


def _source(path: Path, environment: str | None) -> tuple[str, str, list[Any]]:
    """(swarm, output name, agents) from a compiled directory's registry.json or from a spec
    (with its ``--env`` overlay); the output name is ``<swarm>`` or ``<swarm>.<env>``, as under compiled/."""
    from swarm.secrets_env import AgentEntry

    catalog = path / "registry.json" if path.is_dir() else path
    if catalog.name == "registry.json" and catalog.is_file():
        try:
            data = json.loads(catalog.read_text(encoding="utf-8"))
            agents = [AgentEntry(id=str(a["agent_id"]), registry=bool(a["registry"])) for a in data["agents"].values()]
            return str(data["swarm"]), catalog.resolve().parent.name, agents
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(f"{catalog}: not a compiled registry.json ({exc})") from exc
    from swarm.spec.loader import load_spec_full

    loaded = load_spec_full(path, environment)  # a bad spec: SpecError, printed by the dispatcher
    return loaded.spec.name, loaded.output_name, [AgentEntry(id=a.id, registry=a.registry) for a in loaded.spec.agents]


def registry_secret(args: argparse.Namespace) -> str:
    """The registry secret: ``--secret-file``'s first line, else SWARM_REGISTRY_SECRET (never generated)."""
    from swarm.secrets_env import SECRET_ENV

    if args.secret_file is not None:
        try:
            lines = args.secret_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidRequestError(f"--secret-file {args.secret_file}: {exc.strerror or exc}") from exc
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise InvalidRequestError(f"--secret-file {args.secret_file} is empty")
        return secret
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise InvalidRequestError(
            f"{SECRET_ENV} is not set (and no --secret-file): it is the key of every agent token, so "
            "it is not generated here; create one once, e.g. `python3 -c 'import secrets; "
            f"print(secrets.token_hex(32))'`, keep it, and export {SECRET_ENV}")
    return secret


def _previous(out: Path, force: bool) -> dict[str, str]:
    """The variables of the file being replaced (empty when there is none); refuses a foreign file."""
    from swarm.secrets_env import parse, written_by_us

    try:
        text = out.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        if force:
            return {}
        raise InvalidRequestError(f"{out} exists and cannot be read ({exc}); --force replaces it") from exc
    if written_by_us(text):
        return parse(text)
    if force:
        return {}
    raise InvalidRequestError(f"{out} exists and was not written by `swarm secrets env`; "
                              "refusing to overwrite it (--force replaces it)")


def _write_private(out: Path, text: str) -> None:
    """Create a 0600 file next to ``out`` and rename it over ``out``: never world-readable, never half-written."""
    parent = out.parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
        tmp = parent / f".{out.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask; only ever narrower, but be exact
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InvalidRequestError(f"writing {out} failed: {exc.strerror or exc}") from exc


def run_env(args: argparse.Namespace) -> int:
    import secrets

    from swarm.redis_auth import BUS_SECRET_ENV, PASSWORD_ENV
    from swarm.secrets_env import ADMIN_TOKEN_ENV, compose_env, render

    secret = registry_secret(args)
    if args.env is not None and (args.source / "registry.json").is_file():
        raise InvalidRequestError("--env applies to a SPEC; a compiled directory is one environment already")
    swarm, output_name, agents = _source(args.source, args.env)
    out = None if args.out == "-" else Path(args.out or Path(".swarm") / f"{output_name}.env")
    previous = _previous(out, args.force) if out is not None else {}
    redis_password = (os.environ.get(PASSWORD_ENV) or previous.get(PASSWORD_ENV)
                      or secrets.token_urlsafe(32))
    values = compose_env(
        swarm, agents,
        registry_secret=secret,
        redis_password=redis_password,
        bus_secret=os.environ.get(BUS_SECRET_ENV) or None,
        admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None,
    )
    text = render(swarm, values)
    if out is None:
        sys.stdout.write(text)
        return EXIT_OK
    _write_private(out, text)
    compose = (args.source if (args.source / "registry.json").is_file() else Path("compiled") / output_name) / "docker-compose.yml"
    tokens = sum(1 for name in values if name.startswith("SWARM_AGENT_TOKEN_"))
    print(f"wrote {out} (mode 0600): {len(values)} variables, {tokens} agent tokens and "
          f"{len(agents)} bus passwords of swarm {swarm}; use it with "
          f"`docker compose --env-file {out} -f {compose} up`")
    return EXIT_OK

"""``swarm images build`` without a container engine: what it builds, with which command, and the wheel it serves.

A stand-in engine (a script named ``docker`` on PATH) records its arguments and, like a
real build's ``pip install``, fetches PIP_FIND_LINKS: so the tests see that the wheel
is reachable while the builds run. The real engine is exercised by the container
end-to-end test (tests/containers).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from swarm import __version__
from swarm.errors import EngineError, InvalidRequestError
from swarm.images import (
    ImageBuild, Runner, build_command, build_images, build_wheel, plan_builds, serve_directory, source_tree,
)

REPO = Path(__file__).resolve().parents[1]
WHEEL_NAME = f"swarm_gitops-{__version__}-py3-none-any.whl"

FAKE_ENGINE = """#!{python}
import json, os, re, sys, urllib.request
args = sys.argv[1:]
links = [a.split("=", 1)[1] for a in args if a.startswith("PIP_FIND_LINKS=")]
listing = urllib.request.urlopen(links[0], timeout=5).read().decode() if links else ""
with open(os.environ["FAKE_ENGINE_LOG"], "a") as fh:
    fh.write(json.dumps({{"args": args, "listing": listing}}) + "\\n")
if os.environ.get("FAKE_ENGINE_FAIL") and os.environ["FAKE_ENGINE_FAIL"] in " ".join(args):
    for i in range(40):
        print(f"step {{i}}")
    print("ERROR: base image not found", file=sys.stderr)
    sys.exit(3)
print("built")
"""


def compose_dir(tmp_path: Path, services: dict[str, object]) -> Path:
    directory = tmp_path / "compiled" / "lab"
    directory.mkdir(parents=True)
    for name in ("agents/a", "agents/b", "registry", "src"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / "docker-compose.yml").write_text(yaml.safe_dump({"name": "lab", "services": services}))
    return directory


SERVICES: dict[str, object] = {
    "a": {"build": {"context": "./agents/a", "args": ["X=1"], "additional_contexts": {"src": "./src"}},
          "image": "reg.example/team/lab-a:1.0.0"},
    "b": {"build": {"context": "./agents/b", "dockerfile": "Dockerfile.alt", "args": {"X": "2"}},
          "image": "lab-b:2.0.0"},
    "registry": {"build": {"context": "./registry"}, "image": "lab-swarm:0.1.0"},
    "setup": {"build": {"context": "./registry"}, "image": "lab-swarm:0.1.0"},
    "redis": {"image": "redis:7"},
}


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `docker` first on PATH; returns the file it logs each call to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_ENGINE.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "engine.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    return log


def fake_wheel(tmp_path: Path, name: str = WHEEL_NAME) -> Path:
    path = tmp_path / "wheels" / name
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("swarm/__init__.py", "")
    return path


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_one_build_per_image_tag_of_the_compose_file(tmp_path: Path) -> None:
    directory = compose_dir(tmp_path, SERVICES)
    builds = plan_builds(directory / "docker-compose.yml")
    assert [b.tag for b in builds] == ["lab-b:2.0.0", "lab-swarm:0.1.0", "reg.example/team/lab-a:1.0.0"]
    b, swarm_image, a = builds
    assert swarm_image.services == ("registry", "setup") and swarm_image.context == (directory / "registry").resolve()
    assert a.args == {"X": "1"} and a.contexts == {"src": (directory / "src").resolve()}
    assert b.dockerfile == (directory / "agents/b/Dockerfile.alt").resolve()


@pytest.mark.parametrize(("service", "message"), [
    ({"build": {"context": "./agents/a"}}, "names no `image:` tag"),
    ({"build": {"context": "./agents/a"}, "image": "x-${TAG}:1"}, "uses a variable"),
])
def test_a_service_without_a_literal_tag_is_refused(tmp_path: Path, service: object, message: str) -> None:
    directory = compose_dir(tmp_path, {"a": service})
    with pytest.raises(InvalidRequestError, match=message) as info:
        plan_builds(directory / "docker-compose.yml")
    assert "services.a" in str(info.value)


def test_two_different_builds_under_one_tag_are_refused(tmp_path: Path) -> None:
    directory = compose_dir(tmp_path, {
        "a": {"build": {"context": "./agents/a"}, "image": "same:1"},
        "b": {"build": {"context": "./agents/b"}, "image": "same:1"},
    })
    with pytest.raises(InvalidRequestError, match="also built by services.a"):
        plan_builds(directory / "docker-compose.yml")


def test_the_committed_compose_file_names_a_tag_for_every_build() -> None:
    compose = yaml.safe_load((REPO / "compiled/research/docker-compose.yml").read_text())
    builds = plan_builds(REPO / "compiled/research/docker-compose.yml")
    assert {b.tag for b in builds} == {s["image"] for s in compose["services"].values() if "build" in s}


def test_the_command_line_of_one_build() -> None:
    item = ImageBuild(tag="lab-a:1", context=Path("/c/a"), dockerfile=Path("/c/a/D"), args={"X": "1", "Y": "y"},
                      contexts={"src": Path("/c/src")})
    cmd = build_command("podman", item, {"X": "override", "PIP_FIND_LINKS": "http://h/"}, ["-v", "/a:/a:ro"])
    assert cmd[:6] == ["podman", "build", "--tag", "lab-a:1", "--network", "host"]
    assert "--format" in cmd and cmd[cmd.index("--format") + 1] == "docker"  # OCI format drops HEALTHCHECK
    assert "X=override" in cmd and "X=1" not in cmd and "Y=y" in cmd and "PIP_FIND_LINKS=http://h/" in cmd
    assert cmd[cmd.index("--build-context") + 1] == "src=/c/src"
    assert cmd[-3:] == ["-v", "/a:/a:ro", "/c/a"]  # extra engine arguments, then the context
    assert "--format" not in build_command("docker", item, {}, [])


def test_the_wheel_directory_is_served_while_the_block_runs(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path)
    with serve_directory(wheel.parent) as url:
        assert url.startswith("http://127.0.0.1:")
        assert WHEEL_NAME in httpx.get(url, timeout=5).text  # the listing pip's --find-links reads
        assert httpx.get(url + WHEEL_NAME, timeout=5).content == wheel.read_bytes()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)


def test_the_cli_builds_every_image_with_the_wheel_reachable(tmp_path: Path, engine: Path) -> None:
    directory = compose_dir(tmp_path, SERVICES)
    wheel = fake_wheel(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "swarm", "images", "build", str(directory), "--engine", "docker", "--quiet",
         "--wheel", str(wheel), "--build-arg", "PYTHON_IMAGE=mirror.example/python:3.11", "--", "--label", "k=v"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lab-b:2.0.0", "lab-swarm:0.1.0", "reg.example/team/lab-a:1.0.0"]
    made = calls(engine)
    assert len(made) == 3
    for call in made:
        args = call["args"]
        assert isinstance(args, list)
        assert "PYTHON_IMAGE=mirror.example/python:3.11" in args and args[-3:-1] == ["--label", "k=v"]
        assert WHEEL_NAME in str(call["listing"])  # pip inside the build can find the running swarm


def test_an_engine_failure_names_the_image_and_shows_the_last_lines(tmp_path: Path, engine: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "lab-swarm")
    builds = plan_builds(compose_dir(tmp_path, SERVICES) / "docker-compose.yml")
    with pytest.raises(EngineError) as info:
        build_images(builds, engine="docker", runner=Runner(echo=None), wheel=fake_wheel(tmp_path))
    message = str(info.value)
    assert "building lab-swarm:0.1.0 (service registry) failed (exit 3)" in message
    assert "ERROR: base image not found" in message and "step 39" in message and "step 2\n" not in message
    assert len(calls(engine)) == 2  # it stopped at the failing image


def test_a_wheel_of_another_version_or_name_is_refused(tmp_path: Path, engine: Path) -> None:
    builds = plan_builds(compose_dir(tmp_path, SERVICES) / "docker-compose.yml")
    for name in ("swarm_gitops-9.9.9-py3-none-any.whl", "other-0.1.0-py3-none-any.whl"):
        with pytest.raises(InvalidRequestError, match="--wheel"):
            build_images(builds, engine="docker", runner=Runner(echo=None), wheel=fake_wheel(tmp_path, name))
    assert not engine.exists()  # nothing was built


def test_a_spec_whose_compiled_output_is_stale_is_refused(tmp_path: Path, engine: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from swarm.cli import main

    assert main(["images", "build", str(REPO / "specs"), "--engine", "docker",
                 "--compiled-dir", str(tmp_path / "nothing")]) == 2
    assert "run `swarm compile` first" in capsys.readouterr().err
    assert not engine.exists()


def test_other_commands_keep_argparse_double_dash() -> None:
    from swarm.cli import build_parser

    args = build_parser().parse_args(["bus", "publish", "t.x", "--as", "a", "--", "-1"])
    assert args.payload == "-1"  # main() hands these words to argparse whole: only `images build` splits at `--`


@pytest.mark.slow
def test_the_wheel_is_built_from_the_running_source_tree(tmp_path: Path) -> None:
    assert source_tree() == REPO
    wheel = build_wheel(Runner(echo=None), tmp_path)
    assert wheel.name.startswith(f"swarm_gitops-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        assert "swarm/images.py" in zf.namelist()

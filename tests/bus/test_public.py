"""The public names of swarm.bus: sorted, complete, importable (the module loads them lazily)."""

from __future__ import annotations

import subprocess
import sys

import swarm.bus


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert list(swarm.bus.__all__) == sorted(swarm.bus.__all__)
    for name in swarm.bus.__all__:
        assert getattr(swarm.bus, name) is not None


def test_generated_agents_import_line_works_and_pure_modules_stay_pure() -> None:
    code = (
        "import sys; import swarm.bus.breaker, swarm.bus.dedup; assert 'redis' not in sys.modules; "
        "from swarm.bus import EventBus, Message, PublishResult; assert 'redis' in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"

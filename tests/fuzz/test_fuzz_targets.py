"""Every fuzz target of tests/fuzz over its seed corpus and the inputs that once broke it (``regressions/``).

``make fuzz`` (tests/fuzz/run.py) explores with atheris; this replays without it, so that ``make test`` keeps the
targets working and every crash found stays fixed: a regression input is named after what it broke.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.fuzz.run import TARGETS

HERE = Path(__file__).resolve().parent


def _inputs(name: str) -> list[tuple[str, bytes]]:
    target = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    found = sorted((HERE / "regressions" / name).glob("*")) if (HERE / "regressions" / name).is_dir() else []
    return [(f"seed-{i}", s) for i, s in enumerate(target.seeds())] + [(p.name, p.read_bytes()) for p in found]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    module = importlib.import_module(f"tests.fuzz.fuzz_{request.param}")
    module.setup()
    yield module
    if hasattr(module, "close"):
        module.close()


def test_seeds_and_regressions_pass(target: ModuleType) -> None:
    name = target.__name__.rsplit("_", 1)[1]
    for _label, data in _inputs(name):
        target.check(data)


def test_every_target_has_seeds() -> None:
    for name in TARGETS:
        assert importlib.import_module(f"tests.fuzz.fuzz_{name}").seeds(), name

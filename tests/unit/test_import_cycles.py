"""scripts/check_import_cycles.py: its verdicts on tiny packages built in tmp_path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from textwrap import dedent
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_import_cycles.py"


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_import_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def write_package(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path relative to root -> source) and return root."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(source))
    return root


def run(checker: ModuleType, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = checker.main(["--root", str(root), "pkg"])
    return status, capsys.readouterr().out


def test_top_level_cycle_is_reported_as_a_chain(
    checker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import helper\n",
            "pkg/b.py": "from . import c\n\ndef helper() -> None: ...\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    status, out = run(checker, root, capsys)
    assert status == 1
    assert "import cycle: pkg.a -> pkg.b -> pkg.c -> pkg.a" in out
    assert "pkg/a.py:1: pkg.a imports pkg.b: helper" in out
    assert "pkg/b.py:1: pkg.b imports pkg.c: c" in out


def test_function_level_import_still_makes_a_cycle(
    checker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/registry.py": "from pkg.metrics import observe\n",
            "pkg/metrics.py": """\
                def observe() -> None:
                    from ..pkg.registry import state  # relative, two levels up and back

                def snapshot() -> None:
                    from pkg.registry import state
            """,
        },
    )
    status, out = run(checker, root, capsys)
    assert status == 1
    assert "import cycle: pkg.metrics -> pkg.registry -> pkg.metrics" in out
    assert "pkg.metrics imports pkg.registry: state (inside snapshot())" in out


def test_acyclic_package_passes(
    checker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_package(
        tmp_path,
        {
            # The package re-exports from a submodule, and a sibling imports the submodule by
            # name: `import pkg.store` is an edge to pkg.store, not to pkg/__init__.py.
            "pkg/__init__.py": "from pkg.store import Store\n",
            "pkg/store.py": "import json\n\nclass Store: ...\n",
            "pkg/server.py": "import pkg.store\nfrom pkg import store\nfrom . import store as s\n",
        },
    )
    status, out = run(checker, root, capsys)
    assert status == 0
    assert "no import cycle among 3 modules" in out


def test_importing_the_package_itself_targets_its_init(
    checker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.store import Store\n",
            "pkg/store.py": "from pkg import VERSION\n\nclass Store: ...\n",
        },
    )
    status, out = run(checker, root, capsys)
    assert status == 1
    assert "import cycle: pkg -> pkg.store -> pkg" in out


def test_generated_code_is_not_checked(
    checker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_package(
        tmp_path,
        {
            "protocol/__init__.py": "",
            "protocol/gen/a_pb2.py": "from protocol.gen import b_pb2\n",
            "protocol/gen/b_pb2.py": "from protocol.gen import a_pb2\n",
        },
    )
    assert checker.main(["--root", str(root), "protocol"]) == 0
    assert "no import cycle among 1 modules" in capsys.readouterr().out

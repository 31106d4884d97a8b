"""The committed stubs in src/micro/_proto are what scripts/generate.sh makes from
proto/micro/v1 now: a proto change without regenerating fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMITTED = HERE / "src" / "micro" / "_proto"


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    subprocess.run(
        ["bash", str(HERE / "scripts" / "generate.sh"), str(out)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "run clients/python/scripts/generate.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run clients/python/scripts/generate.sh"
    assert len(fresh) == 13  # 4 protos x (_pb2.py, _pb2.pyi, _pb2_grpc.py) + __init__.py


def test_the_stubs_import_relatively() -> None:
    """Nothing in the stubs imports `micro.v1` (it would resolve inside this package)."""
    for path in COMMITTED.glob("*.py*"):
        assert "from micro.v1" not in path.read_text(), path

"""The benchmark script runs end to end in its quick mode: both loops, a table and JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_mode_prints_a_table_and_json(tmp_path):
    if not (REPO.parent / "shared" / "bench" / "tutorial_loop.py").is_file():
        pytest.skip("the reference loop is not beside this checkout")
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "bench/compare.py", "--quick", "--methods", "extract",
                             "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tutorial loop" in result.stdout and "runner extract.yaml" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["who"] for r in rows] == ["tutorial loop", "runner extract.yaml"]
    assert all(r["wall_s"] > 0 and r["peak_mib"] > 0 and 0 <= r["best_val_acc"] <= 1 for r in rows)

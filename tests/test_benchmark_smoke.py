"""The rating-accuracy benchmark pipeline runs end to end and its numbers are well-formed.

No thresholds on the noisy figures of our own ratings: only that they exist and are valid.
The baselines and the official ratings are deterministic, so those are checked exactly.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("rating_nats", REPO / "benchmarks" / "rating_nats.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_rating_benchmark_smoke(shared_data, tmp_path):
    bench = _load_benchmark()
    data_dir = Path(os.environ.get("BOSSNAS_DATA", Path.home() / ".cache" / "bossnas-data"))
    out = tmp_path / "bench"
    # the smoke preset, shrunk further: this checks the pipeline, not the figures
    code = bench.main(["--preset", "smoke", "--data-dir", str(data_dir), "--out", str(out), "--quiet",
                       "--set", "data.train_images=128", "--set", "search.rate_images=32", "--set", "data.image_size=8"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["results"]
    assert set(rows) == {"ours (BossNAS, this run)", "official BossNAS ratings", "sum of widths", "parameters", "FLOPs", "random"}
    assert report["architectures"] == 32768
    for name, r in rows.items():
        for key in ("kendall", "spearman", "pearson", "decile_spearman"):
            assert -1.0 <= r[key] <= 1.0, (name, key)
        for budget in ("any", "25%", "50%"):
            assert 79.0 <= r[f"pick_{budget}"] <= r[f"best_{budget}"] <= 93.65
    official = rows["official BossNAS ratings"]
    assert round(official["kendall"], 3) == 0.534 and round(official["spearman"], 3) == 0.734
    widths = rows["sum of widths"]
    assert round(widths["spearman"], 3) == 0.925 and round(widths["kendall"], 3) == 0.785
    assert abs(rows["random"]["spearman"]) < 0.05
    assert rows["ours (BossNAS, this run)"]["pick_any"] == report["chosen_accuracy"]
    for name in ("report.md", "rating_vs_accuracy.png", "block_heatmaps.png"):
        assert (out / name).stat().st_size > 0
    assert "| official BossNAS ratings | 0.534 | 0.734 |" in (out / "report.md").read_text()

"""The command line: runs, reports, resumes and reports user errors in one line."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from simulations.cli import main

TOY = {
    "name": "toy-cli",
    "seeds": [0, 1],
    "data": {"dataset": "toy", "options": {"n": 1500}},
    "collective": {"methods": ["rb-prob", "random"], "alphas": [0.2, 0.3], "budgets": [0.2, 1.0]},
    "engine": {"n_jobs": 1},
}


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(tomli_w.dumps(TOY))
    return path


def test_run_writes_table_summary_figures_and_manifest(tmp_path, config, capsys):
    out = tmp_path / "res"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Best eqod over the budget M" in printed and "rb-prob" in printed
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 * (1 + 2 * 2 * 2)
    assert {"seed", "method", "alpha", "budget", "flips", "eqod", "error"} <= set(runs.columns)
    for name in ("report.html", "summary.csv", "summary.txt", "scenario.toml", "manifest.json", "best_eqod_vs_alpha.png",
                 "error_vs_eqod.png", "eqod_vs_flips_alpha0.3.png"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["environment"]["packages"]["numpy"]
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "toy-cli" in page and "numpy" in page


def test_resume_recomputes_only_missing_seeds(tmp_path, config):
    out = tmp_path / "res"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots"]) == 0
    first = pd.read_csv(out / "runs.csv")
    (out / "partial" / "seed-1.csv").unlink()  # as if killed during seed 1
    (out / "runs.csv").unlink()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_seeds"] == [0] and list(manifest["seconds_per_seed"]) == ["1"]
    again = pd.read_csv(out / "runs.csv")
    pd.testing.assert_frame_equal(first.drop(columns="seconds", errors="ignore"),
                                  again.drop(columns="seconds", errors="ignore"))


def test_resume_refuses_a_different_scenario(tmp_path, config, capsys):
    out = tmp_path / "res"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots", "--seeds", "0"]) == 0
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots", "--seeds", "0,1"]) == 2
    assert "holds results of a different scenario; pass --fresh" in capsys.readouterr().err
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots", "--seeds", "0,1", "--fresh"]) == 0


def test_report_redraws_from_a_folder(tmp_path, config, capsys):
    out = tmp_path / "res"
    main(["run", str(config), "--out", str(out), "--quiet", "--no-plots"])
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "figure:" in capsys.readouterr().out
    assert (out / "best_eqod_vs_alpha.png").stat().st_size > 1000


def test_validate(config, capsys):
    assert main(["validate", str(config)]) == 0
    assert "ok (toy-cli: toy, 16 runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "missing.toml"], "missing.toml: no such scenario file"),
        (["run", "--seeds", "a,b"], "--seeds 'a,b': allowed: comma-separated ints"),
        (["report", "/nonexistent-results"], "no runs.csv here"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, message):
    proc = subprocess.run([sys.executable, "-m", "simulations.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"collective-fairness: error: {proc.stderr.strip().split('error: ', 1)[1]}"
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_config_value_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[collective]\nmethods = ["rb-prob", "magic"]\n')
    proc = subprocess.run([sys.executable, "-m", "simulations.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"collective-fairness: error: {bad}: [collective] methods: unknown method 'magic'; "
        "allowed: rb-prob, rb-label, rb-dist, random, oracle"
    )

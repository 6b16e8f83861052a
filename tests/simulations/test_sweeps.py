"""simulations.sweeps: a [dynamics] scenario over two parameters, its tables and phase diagrams."""

import numpy as np
import pandas as pd
import pytest
import tomli_w

from agents.errors import ConfigError
from simulations import dynamics
from simulations.cli import main
from simulations.scenario import Scenario
from simulations.sweeps import load_sweep, run_sweep

BASE = {
    "name": "toy-sweep",
    "seeds": [0, 1],
    "data": {"dataset": "toy", "options": {"n": 1200}},
    "collective": {"methods": ["rb-prob"], "alphas": [0.3], "budgets": [0.5], "validation": 0.0},
    "engine": {"n_jobs": 1},
    "dynamics": {"rounds": 2, "compliance": 1.0, "dropout": 0.0},
}
SWEEP = {"x": {"key": "dynamics.compliance", "values": [0.5, 1.0]},
         "y": {"key": "dynamics.dropout", "values": [0.0, 0.2]}}


def write(tmp_path, sweep=SWEEP, base=BASE, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(tomli_w.dumps({**base, "sweep": sweep}))
    return path


def test_each_combination_is_the_scenario_with_both_values_set(tmp_path):
    sweep = load_sweep(write(tmp_path))
    assert [(xv, yv) for _, _, xv, yv in sweep.points()] == [(0.5, 0.0), (0.5, 0.2), (1.0, 0.0), (1.0, 0.2)]
    table = run_sweep(sweep, tmp_path / "out", progress=False)
    assert list(table.columns[:2]) == ["dynamics.compliance", "dynamics.dropout"]
    # an independent run of one combination, straight through simulations.dynamics, gives the same rows
    scenario = Scenario.from_dict({**BASE, "dynamics": {**BASE["dynamics"], "compliance": 0.5, "dropout": 0.2}})
    _, direct = dynamics.run_scenario(scenario)
    mine = table[(table["dynamics.compliance"] == 0.5) & (table["dynamics.dropout"] == 0.2)]
    columns = ["seed", "round", "method", "flips", "participants", "eqod"]
    pd.testing.assert_frame_equal(mine[columns].reset_index(drop=True), direct[columns].reset_index(drop=True),
                                  check_dtype=False)
    # compliance 0.5 flips about half as many as compliance 1 on the same draws; dropout thins the participants
    cells = table[table["method"] != "base"].groupby(["dynamics.compliance", "dynamics.dropout"])
    flips, participants = cells["flips"].mean(), cells["participants"].mean()
    assert flips[(0.5, 0.0)] < 0.75 * flips[(1.0, 0.0)]
    assert participants[(1.0, 0.2)] < participants[(1.0, 0.0)]
    out = tmp_path / "out"
    phase = pd.read_csv(out / "phase.csv")
    assert set(phase["round"]) == {2} and len(phase) == 4 * 2  # 4 combinations x (base + the cell)
    last = table[(table["round"] == 2) & (table["method"] == "rb-prob")]
    by_hand = last.groupby(["dynamics.compliance", "dynamics.dropout"])["eqod"].mean()
    got = phase[phase["method"] == "rb-prob"].set_index(["dynamics.compliance", "dynamics.dropout"])["eqod"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), by_hand.sort_index().to_numpy())
    assert [p.name for p in out.glob("phase_*.png")] == ["phase_coordinator_rb-prob_a0.3_b0.5.png"]
    page = (out / "report.html").read_text()
    assert "phase_coordinator_rb-prob_a0.3_b0.5.png" in page and "compliance=0.5, dropout=0.2" in page
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["x0-y0", "x0-y1", "x1-y0", "x1-y1"]


@pytest.mark.parametrize("sweep, match", [
    ({"x": SWEEP["x"]}, r"\[sweep\] has \['x'\]"),
    ({**SWEEP, "x": {"key": "compliance", "values": [0.5]}}, r"\[sweep\] x key: 'compliance' is not allowed"),
    ({**SWEEP, "y": {"key": "dynamics.dropout", "values": []}}, r"\[sweep\] y values: \[\] is not allowed"),
    ({**SWEEP, "y": SWEEP["x"]}, "both 'dynamics.compliance'"),
    ({**SWEEP, "show": ["nope"]}, r"show: \['nope'\] is not allowed; allowed: a list of participants"),
    ({**SWEEP, "y": {"key": "dynamics.dropout", "values": [0.1, 2.0]}},
     r"\[sweep\] dynamics.compliance = 0.5, dynamics.dropout = 2.0: .*dropout: 2.0 is not allowed"),
])
def test_bad_sweep_is_one_config_error_before_anything_runs(tmp_path, sweep, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep(write(tmp_path, sweep))


def test_a_sweep_needs_dynamics(tmp_path):
    base = {k: v for k, v in BASE.items() if k != "dynamics"}
    with pytest.raises(ConfigError, match=r"needs a \[dynamics\] section"):
        load_sweep(write(tmp_path, base=base))


def test_cli_sweep_runs_and_bad_file_is_exit_2(tmp_path, capsys):
    path = write(tmp_path, {"x": {"key": "dynamics.compliance", "values": [1.0]},
                            "y": {"key": "dynamics.rounds", "values": [1, 2]}})
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--seeds", "3", "--quiet"]) == 0
    assert "2 combinations, 1 seeds" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "o" / "sweep_rounds.csv")
    assert set(table["seed"]) == {3} and table.groupby("dynamics.rounds")["round"].max().to_dict() == {1: 1, 2: 2}
    bad = write(tmp_path, {"x": SWEEP["x"]}, name="bad.toml")
    assert main(["sweep", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[sweep]" in err[0] and not (tmp_path / "results").exists()

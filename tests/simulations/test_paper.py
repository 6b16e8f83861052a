"""`collective-fairness paper`: every available dataset into one report; unavailable ones skipped, said why."""

import pandas as pd
import pytest

from simulations.cli import main
from simulations.paper import PAPER_CONFIGS, paper_configs, run_paper
from simulations.scenario import load_scenario

TOY = """name = "paper-toy"
seeds = [0, 1]
[data]
dataset = "toy"
[data.options]
n = 600
[collective]
methods = ["rb-prob", "random"]
alphas = [0.3, 0.6]
budgets = [0.2, 1.0]
validation = 0.25
[engine]
n_jobs = 1
[baselines]
methods = ["threshold-optimizer"]
"""
MISSING = """name = "paper-missing"
[data]
dataset = "csv"
sensitive = "g"
[data.options]
path = "/nonexistent/people.csv"
label = "y"
favourable = 1
protected = "f"
"""

@pytest.fixture()
def configs(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "toy.toml").write_text(TOY)
    (folder / "missing.toml").write_text(MISSING)
    return folder

def test_the_shipped_paper_scenarios_validate():
    names = [p.stem for p in paper_configs()]
    assert {"adult", "compas", "german", "acs-income"} <= set(names)
    for path in paper_configs():
        s = load_scenario(path)
        assert s.baselines is not None and s.collective.validation > 0  # Pareto fronts and a pilot
    assert PAPER_CONFIGS.name == "paper"

def test_one_report_for_every_available_dataset(configs, tmp_path, capsys):
    report = run_paper(tmp_path / "out", configs=configs, progress=False)
    page = report.read_text()
    assert "paper-toy" in (tmp_path / "out" / "toy" / "manifest.json").read_text()
    assert "<h2 id='toy'>toy</h2>" in page and "Each claim rests on 2 seeds" in page
    assert "Not run here" in page and "missing" in page and "/nonexistent/people.csv" in page
    assert page.count("<figure>") >= 3  # the paper's figures, embedded
    claims = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert set(claims["dataset"]) == {"toy"} and set(claims["selection"]) == {"validation", "fixed", "paper"}
    assert (claims["n"] == 2).all()
    assert "missing: skipped" in capsys.readouterr().out

def test_unknown_dataset_is_one_line(configs, capsys):
    assert main(["paper", "--datasets", "nope", "--out", str(configs.parent / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--datasets nope" in err[0] and "allowed: acs-income, adult" in err[0]

"""Scenario files are validated on load with one clear line per mistake."""

from pathlib import Path

import pytest
import tomli_w

from agents.errors import ConfigError
from simulations.scenario import PAPER_ALPHAS, Scenario, load_scenario

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path, raw) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(raw) if isinstance(raw, dict) else raw)
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    scenario = load_scenario(path)
    assert scenario.name


def test_default_is_the_paper_experiment_and_matches_its_config():
    default = load_scenario(None)
    assert default.data.dataset == "adult" and default.collective.alphas == PAPER_ALPHAS
    assert len(default.collective.methods) == 4 and len(default.collective.budgets) == 8
    assert len(default.seeds) == 3
    shipped = load_scenario(CONFIGS / "paper-adult.toml")
    assert shipped.replace(description="") == default.replace(description="", data__sensitive="sex")


def test_round_trip(tmp_path):
    s = load_scenario(CONFIGS / "synthetic.toml")
    assert load_scenario(write(tmp_path, s.to_dict())) == s


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"colective": {}}, "colective: unknown key; allowed: name, description, seeds"),
        ({"collective": {"alpha": [0.1]}}, "[collective] alpha: unknown key; allowed: methods, alphas"),
        ({"collective": {"alphas": [0.1, 1.5]}}, "[collective] alphas: 1.5 is out of range; allowed: numbers in (0, 1]"),
        ({"collective": {"methods": ["rb-prob", "rb-foo"]}}, "unknown method 'rb-foo'; allowed: rb-prob, rb-label, rb-dist, random, oracle"),
        ({"collective": {"budgets": [0.2, -3]}}, "budgets: -3 is negative"),
        ({"collective": {"budgets": [1.5]}}, "budgets: 1.5 is out of range"),
        ({"collective": {"budgets": ["all"]}}, "is not a number"),
        ({"collective": {"reference": 0}}, "reference: 0 is not allowed; allowed: \"all\" or an int n >= 1"),
        ({"collective": {"k": 0}}, "k: 0 is not allowed"),
        ({"collective": {"methods": ["oracle"]}}, "'oracle' needs a synthetic dataset"),
        ({"data": {"dataset": "mnist"}}, "unknown dataset 'mnist'; allowed: adult, compas, german, synthetic, toy, csv"),
        ({"data": {"test_size": 1.2}}, "test_size: 1.2 is out of range; allowed: a number in (0, 1)"),
        ({"data": {"dataset": "csv", "sensitive": "g", "options": {"path": "x.csv"}}}, "a csv dataset needs label, favourable, protected"),
        ({"firm": {"model": "svm-magic"}}, "unknown model 'svm-magic'; allowed: logistic-regression"),
        ({"firm": {"params": {"not_a_param": 1}}}, "cannot build 'logistic-regression'"),
        ({"engine": {"backend": "spark"}}, "unknown backend 'spark'; allowed: vectorised, flower"),
        ({"engine": {"n_jobs": 0}}, "n_jobs: 0 is not allowed"),
        ({"flower": {"agents-per-node": 0}}, "agents-per-node: 0 is not allowed; allowed: an int >= 1"),
        ({"seeds": [1, 1]}, "seeds: lists a seed twice"),
        ({"seeds": [-1]}, "seeds: [-1] is not allowed"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, raw, message):
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, raw))
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert str(tmp_path / "s.toml") in text


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(write(tmp_path, "name = [unclosed"))


def test_csv_paths_are_relative_to_the_scenario(tmp_path):
    s = load_scenario(CONFIGS / "user-csv.toml")
    assert Path(s.data.options["path"]) == (CONFIGS / "data" / "loans.csv").resolve()


def test_replace_changes_sections():
    s = Scenario().replace(seeds=(5,), collective__alphas=(0.3,), engine__n_jobs=1)
    assert s.seeds == (5,) and s.collective.alphas == (0.3,) and s.engine.n_jobs == 1
    assert s.collective.methods == Scenario().collective.methods

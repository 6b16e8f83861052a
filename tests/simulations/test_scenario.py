"""Scenario files are validated on load with one clear line per mistake."""

from pathlib import Path

import pytest
import tomli_w

from agents.errors import ConfigError, DataError
from simulations.backends import BACKENDS
from simulations.datasets import DATASETS, SYNTHETIC
from simulations.executors import EXECUTORS
from simulations.scenario import PAPER_ALPHAS, CollectiveConfig, DataConfig, EngineConfig, Scenario, load_scenario

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
        ({"seeds": [1, 1]}, "seeds: lists seed 1 twice; allowed: distinct values"),
        ({"seeds": [-1]}, "seeds: [-1] is not allowed"),
        ({"collective": {"alphas": [0.1, 0.2, 0.1]}}, "[collective] alphas: lists alpha 0.1 twice; allowed: distinct"),
        ({"collective": {"budgets": [0.2, 5, 0.2]}}, "[collective] budgets: lists budget 0.2 twice; allowed: distinct"),
        ({"collective": {"budgets": [5, 5]}}, "[collective] budgets: lists budget 5 twice"),
        ({"engine": {"executor": "spark"}}, "[engine] executor: unknown executor 'spark'; allowed: serial, processes"),
        ({"firm": {"params": {"C": "high"}}}, "[firm] params: cannot build 'logistic-regression' with params {'C': 'high'}: "
                                              "The 'C' parameter of LogisticRegression must be a float"),
        ({"firm": {"model": "random-forest", "params": {"n_estimators": 0}}}, "[firm] params: cannot build 'random-forest'"),
        ({"firm": {"model": "sklearn.linear_model:LinearRegression"}}, "[firm] model: firm model "
         "'sklearn.linear_model:LinearRegression' is not a scikit-learn classifier; allowed: a scikit-learn classifier class"),
        ({"firm": {"model": "collections:OrderedDict"}}, "is not a scikit-learn classifier"),
        ({"firm": {"model": "no_such_module_xyz:Model"}}, "[firm] model: cannot import firm model"),
        ({"name": "../outside"}, "name: '../outside' is not allowed (it names the results folder); allowed: letters, digits"),
        ({"name": "a/b"}, "name: 'a/b' is not allowed"),
        ({"name": ".hidden"}, "name: '.hidden' is not allowed"),
        ({"name": "a..b"}, "name: 'a..b' is not allowed"),
        ({"name": "two words"}, "name: 'two words' is not allowed"),
        ({"name": ""}, "name: '' is not allowed"),
        ({"baselines": {"methods": ["reweighing"]}, "engine": {"backend": "flower"}},
         "[engine] backend: 'flower' cannot run [baselines] or [defence]; allowed: 'vectorised'"),
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


def test_registries_are_the_single_lists_of_names():
    assert SYNTHETIC == ("synthetic", "toy", "synthetic-nonlinear") and set(SYNTHETIC) <= set(DATASETS)
    for value, cls, key in ((DATASETS, DataConfig, "dataset"), (BACKENDS, EngineConfig, "backend"),
                            (EXECUTORS, EngineConfig, "executor")):
        with pytest.raises(ConfigError) as info:
            cls(**{key: "nope"})
        assert f"allowed: {', '.join(value)}" in str(info.value)
    assert Scenario().engine.executor == "processes"
    assert load_scenario(None).replace(engine__executor="serial").engine.executor == "serial"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"collective__alphas": (5.0,)}, "[collective] alphas: 5.0 is out of range"),
        ({"collective__methods": ("magic",)}, "unknown method 'magic'"),
        ({"engine__n_jobs": 0}, "[engine] n_jobs: 0 is not allowed"),
        ({"collective__alpha": (0.1,)}, "[collective] alpha: unknown key"),
        ({"seeds": (0, 0)}, "seeds: lists seed 0 twice"),
        ({"name": "../x"}, "name: '../x' is not allowed"),
        ({"data": "toy"}, "data: must be a table"),
        ({"defence__alphas": (0.9,)}, "[defence] alphas: 0.9 is not in [collective] alphas"),
        ({"collective__methods": ("oracle",)}, "'oracle' needs a synthetic dataset"),
    ],
)
def test_replace_validates_like_a_file(changes, message):
    with pytest.raises(ConfigError) as info:
        Scenario().replace(**changes)
    assert message in str(info.value) and str(info.value).startswith("scenario: ")
    with pytest.raises(ConfigError, match="^x.toml with --seeds: "):
        Scenario().replace("x.toml with --seeds", **changes)


def test_constructors_validate_too():
    with pytest.raises(ConfigError, match=r"^\[collective\] alphas: 5.0 is out of range"):
        CollectiveConfig(alphas=(5.0,))
    with pytest.raises(ConfigError, match=r"^\[data\] dataset: unknown dataset 'mnist'"):
        DataConfig(dataset="mnist")
    with pytest.raises(ConfigError, match=r"^name: '\.\./x' is not allowed"):
        Scenario(name="../x")
    with pytest.raises(ConfigError, match=r"^scenario: \[engine\] n_jobs: -5"):
        Scenario(engine=EngineConfig(n_jobs=1)).replace(engine__n_jobs=-5)
    import dataclasses

    with pytest.raises(ConfigError, match=r"^seeds: lists seed \d+ twice"):
        dataclasses.replace(Scenario(), seeds=(1, 1))
    # Sections may be given as tables; the result is the same as from a file.
    built = Scenario(name="t", data={"dataset": "toy"}, collective={"methods": ["random"]})
    assert built.data == DataConfig(dataset="toy") and built.collective.methods == ("random",)


def test_replace_keeps_sections_and_drops_optional_ones():
    from simulations.scenario import BaselinesConfig

    s = Scenario(name="t", data={"dataset": "toy"}).replace(baselines=BaselinesConfig(methods=("reweighing",)))
    assert s.baselines.methods == ("reweighing",) and s.compares
    assert s.replace(baselines__methods=("massaging",)).baselines.methods == ("massaging",)
    assert s.replace(baselines=None).baselines is None
    assert s.replace(seeds=(3,)).replace(seeds=(0, 1, 2)) == s


@pytest.mark.parametrize("section", ["data", "collective", "firm", "engine", "flower", "baselines", "defence"])
@pytest.mark.parametrize("value", ['"toy"', "3", "[1, 2]", "true"])
def test_a_section_that_is_not_a_table(tmp_path, section, value):
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, f"{section} = {value}\n"))
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 's.toml'}: {section}: must be a table (a [{section}] section), got ")
    assert "allowed: a table with keys" in text and "\n" not in text


def test_unreadable_scenario_files(tmp_path):
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(ConfigError, match="folder.toml: is a directory, not a scenario file; allowed: a UTF-8 TOML"):
        load_scenario(tmp_path / "folder.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.toml: not UTF-8 text \(byte 0xe9 at offset 11\); allowed"):
        load_scenario(latin)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_scenario_file_is_an_error_not_the_default(tmp_path, text):
    with pytest.raises(ConfigError, match="s.toml: the file is empty"):
        load_scenario(write(tmp_path, text))
    assert load_scenario(None) == Scenario()  # no file at all: the default experiment


def test_firm_model_path_is_inspected_never_called(tmp_path, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError, match=r"\[firm\] model: firm model 'subprocess:call' is a function, not a class"):
        load_scenario(write(tmp_path, {"firm": {"model": "subprocess:call"}}))
    assert calls == []
    ok = load_scenario(write(tmp_path, {"firm": {"model": "sklearn.tree:DecisionTreeClassifier",
                                                 "params": {"max_depth": 3}}}))
    assert ok.firm.params == {"max_depth": 3}


def _csv_scenario(tmp_path, frame, **options):
    frame.to_csv(tmp_path / "d.csv", index=False)
    raw = {"name": "csv", "data": {"dataset": "csv", "sensitive": "g",
                                   "options": {"path": "d.csv", "label": "y", "favourable": 1, "protected": "b",
                                               **options}}}
    return load_scenario(write(tmp_path, raw))


def test_check_data_loads_the_data_as_a_run_would(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"x": range(20), "g": list("abab" * 5), "y": [0, 1, 1, 0] * 5})
    _csv_scenario(tmp_path, frame).check_data("s.toml")  # fine
    with pytest.raises(DataError, match=r"^s.toml: \[data\] csv: favourable=7 does not occur in column 'y'"):
        _csv_scenario(tmp_path, frame, favourable=7).check_data("s.toml")
    three = frame.assign(g=list("abcd" * 5))
    with pytest.raises(DataError, match=r"^s.toml: \[data\] csv: sensitive column 'g' of d.csv has 4 distinct"):
        _csv_scenario(tmp_path, three).check_data("s.toml")
    (tmp_path / "d.csv").unlink()
    s = load_scenario(tmp_path / "s.toml")  # a file that vanished after validation
    with pytest.raises(DataError, match="does not exist"):
        s.check_data()
    with pytest.raises(ConfigError, match=r"^scenario: \[data\] toy: option n=5 is not allowed"):
        Scenario(name="t", data={"dataset": "toy", "options": {"n": 5}}).check_data()
    Scenario(name="t", data={"dataset": "adult"}).check_data()  # bundled


# --------------------------------------------------------------------------- [dynamics]


def test_dynamics_absent_by_default_and_round_trips(tmp_path):
    assert Scenario().dynamics is None and "dynamics" not in Scenario().to_dict()
    s = Scenario(name="d", data={"dataset": "toy"},
                 dynamics={"rounds": 3, "coordination": ["gossip", "coordinator"], "gossip-steps": 5,
                           "graph": {"kind": "watts-strogatz", "k": 4, "p": 0.1}})
    assert s.dynamics.coordination == ("gossip", "coordinator") and s.dynamics.gossip_steps == 5
    assert load_scenario(write(tmp_path, s.to_dict())) == s
    gossip = Scenario(name="d", dynamics={"coordination": "gossip", "graph": {"kind": "barabasi-albert", "m": 2}})
    assert gossip.dynamics.coordination == ("gossip",)


def test_dynamics_edge_list_path_is_found_next_to_the_scenario(tmp_path):
    raw = {"name": "d", "data": {"dataset": "toy"},
           "dynamics": {"coordination": "gossip", "graph": {"kind": "edge-list", "path": "g/edges.txt"}}}
    assert load_scenario(write(tmp_path, raw)).dynamics.graph["path"] == str(tmp_path / "g" / "edges.txt")


@pytest.mark.parametrize(
    "dynamics, message",
    [
        ({"rounds": 0}, "[dynamics] rounds: 0 is not allowed; allowed: an int from 1 to 100000"),
        ({"rounds": True}, "[dynamics] rounds: True is not allowed"),
        ({"compliance": -0.5}, "[dynamics] compliance: -0.5 is not allowed; allowed: a probability in [0, 1]"),
        ({"dropout": 2}, "[dynamics] dropout: 2 is not allowed; allowed: a probability in [0, 1]"),
        ({"score_noise": float("nan")}, "[dynamics] score_noise: nan is not allowed; allowed: a finite number >= 0"),
        ({"participation": "vote"}, "[dynamics] participation: unknown participation mode 'vote'; allowed: fixed, "
                                    "threshold, benefit-cost"),
        ({"reports": "keep"}, "[dynamics] reports: unknown report mode 'keep'; allowed: replace, accumulate"),
        ({"coordination": "telepathy"}, "[dynamics] coordination: unknown coordination 'telepathy'; allowed: "
                                        "coordinator, reach, gossip"),
        ({"coordination": []}, "[dynamics] coordination: must be a non-empty list"),
        ({"public": ["gossip"]}, "[dynamics] public: ['gossip'] is not allowed; allowed: a list of own-outcome, "
                                 "group-rates"),
        ({"organisers": -1}, "[dynamics] organisers: -1 is not allowed; allowed: an int count >= 0 or a fraction"),
        ({"organisers": 1.5}, "[dynamics] organisers: 1.5 is not allowed"),
        ({"organisers_by": "loudest"}, "[dynamics] organisers_by: unknown way to choose organisers 'loudest'; "
                                       "allowed: random, most-connected"),
        ({"coordination": "reach"}, "[dynamics] organisers: is 0, so coordination 'reach' reaches nobody"),
        ({"coordination": "reach", "organisers": 0.0}, "reaches nobody"),
        ({"window": 3}, "[dynamics] window: is only read when reports = 'accumulate' (here reports = 'replace'); "
                        "allowed: drop window, or set reports = 'accumulate'"),
        ({"reports": "accumulate", "window": 0}, "[dynamics] window: 0 is not allowed; allowed: an int >= 1"),
        ({"cost_mean": 0.5}, "[dynamics] cost_mean: is only read when participation = 'benefit-cost'"),
        ({"participation": "threshold", "seen": "friends"}, "[dynamics] seen: unknown audience 'friends'; allowed: "
                                                            "everyone, neighbours"),
        ({"graph": {"kind": "ring"}}, "[dynamics.graph] kind: unknown graph kind 'ring'; allowed: complete"),
        ({"graph": "complete"}, "[dynamics.graph]: must be a table, got the string 'complete'"),
        ({"coordination": "gossip", "graph": {"kind": "watts-strogatz", "k": 3, "p": 0.1}},
         "[dynamics.graph] k: the integer 3 is not allowed; allowed: an even int >= 2"),
        ({"coordination": "gossip", "graph": {"kind": "sbm", "blocks": 2, "p_in": 1.2, "p_out": 0.1}},
         "[dynamics.graph] p_in: the number 1.2 is not allowed; allowed: a number in [0, 1]"),
        ({"graph": {"kind": "erdos-renyi", "mean_degree": 5}}, "[dynamics.graph] kind: 'erdos-renyi' is drawn but "
                                                               "nothing reads it"),
        ({"gossip_steps": 5}, "[dynamics] gossip_steps: is only read when coordination = 'gossip'"),
        ({"coordination": "gossip"}, "[dynamics.graph] kind: 'complete' leaves coordination 'gossip' nothing to "
                                     "gossip over"),
        ({"coordination": "gossip", "gossip_steps": 0, "graph": {"kind": "barabasi-albert", "m": 2}},
         "[dynamics] gossip_steps: 0 is not allowed; allowed: an int >= 1"),
        ({"staleness": -1}, "[dynamics] staleness: -1 is not allowed; allowed: an int >= 0"),
        ({"reference_per_member": 0}, "[dynamics] reference_per_member: 0 is not allowed; allowed: an int >= 1 "
                                      "(majority reference rows each member knows), or \"all\""),
        ({"reference_per_member": 2.5}, "[dynamics] reference_per_member: 2.5 is not allowed; allowed: an int >= 1"),
        ({"reference_per_member": 5, "knowledge_groups": 0},
         "[dynamics] knowledge_groups: 0 is not allowed; allowed: an int >= 1"),
        ({"knowledge_groups": 3}, "[dynamics] knowledge_groups: is only read when reference_per_member is an int"),
        ({"roundz": 3}, "[dynamics] roundz: unknown key; allowed: rounds, reports"),
    ],
)
def test_bad_dynamics_values_are_one_line(dynamics, message):
    with pytest.raises(ConfigError) as err:
        Scenario.from_dict({"name": "d", "data": {"dataset": "toy"}, "dynamics": dynamics})
    line = str(err.value)
    assert message in line and "; allowed: " in line and "\n" not in line, line


def test_dynamics_on_flower_needs_what_it_supports_and_no_comparison():
    with pytest.raises(ConfigError, match=r"\[dynamics\]: the flower backend cannot run \[engine\] warm_start as "
                                          r"set; allowed: on flower, participation 'fixed'"):
        Scenario(name="d", engine={"backend": "flower"}, dynamics={})
    Scenario(name="d", engine={"backend": "flower", "warm_start": False}, dynamics={})  # supported
    with pytest.raises(ConfigError, match=r"\[dynamics\]: the flower backend cannot run reference_per_member as "
                                          r"set; allowed: .*reference_per_member = \"all\""):
        Scenario(name="d", engine={"backend": "flower", "warm_start": False},
                 dynamics={"reference_per_member": 10, "knowledge_groups": 2})
    with pytest.raises(ConfigError, match=r"\[dynamics\]: cannot run with \[baselines\] or \[defence\]"):
        Scenario(name="d", baselines={"methods": ["reweighing"]}, dynamics={})

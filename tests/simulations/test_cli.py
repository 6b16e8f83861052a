"""The command line: runs, reports, resumes and reports user errors in one line."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from simulations.cli import main
from simulations.results import REQUIRED_COLUMNS

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
    other = tmp_path / "other.toml"
    other.write_text(tomli_w.dumps({**TOY, "collective": {**TOY["collective"], "budgets": [0.2]}}))
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots", "--seeds", "0"]) == 0
    assert main(["run", str(other), "--out", str(out), "--quiet", "--no-plots", "--seeds", "0"]) == 2
    assert "holds results of a different scenario; allowed: the same scenario" in capsys.readouterr().err
    assert main(["run", str(other), "--out", str(out), "--quiet", "--no-plots", "--seeds", "0", "--fresh"]) == 0


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
        (["run", "--seeds", "a,b"], "--seeds 'a,b': not a list of seeds; allowed: comma-separated ints"),
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


# --------------------------------------------------------------------------- every bad input: one line, exit 2

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _toml(raw: dict) -> str:
    return tomli_w.dumps(raw)


def _csv(folder: Path, **columns) -> str:
    frame = {"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "g": list("abab" * 2)[:6], "y": [0, 1] * 3, **columns}
    pd.DataFrame(frame).to_csv(folder / "d.csv", index=False)
    return _toml({"name": "csv", "data": {"dataset": "csv", "sensitive": "g", "options": {
        "path": "d.csv", "label": "y", "favourable": 1, "protected": "b"}}})


def _with(**sections) -> str:
    raw = {**TOY, **{k: {**TOY.get(k, {}), **v} if isinstance(v, dict) else v for k, v in sections.items()}}
    return _toml(raw)


# name -> (what to write as the scenario: text, bytes, a callable(folder) or None for a directory; extra args;
#          what the line must say)
BAD_INPUTS = {
    "directory": (None, [], "is a directory, not a scenario file; allowed: a UTF-8 TOML scenario file"),
    "not-utf8": ('name = "caf\u00e9"\n'.encode("latin-1"), [], "not UTF-8 text (byte 0xe9 at offset 11)"),
    "empty": ("", [], "the file is empty (no settings); allowed: a UTF-8 TOML scenario file"),
    "comments-only": ("# nothing here\n", [], "the file is empty"),
    "not-toml": ("name = [unclosed", [], "not valid TOML"),
    "data-string": ('data = "toy"\n', [], "data: must be a table (a [data] section), got the string 'toy'; "
                                           "allowed: a table with keys dataset, sensitive"),
    "engine-list": ("engine = [1, 2]\n", [], "engine: must be a table (a [engine] section), got the list [1, 2]"),
    "collective-number": ("collective = 3\n", [], "collective: must be a table (a [collective] section)"),
    "label-three-values": (lambda d: _csv(d, y=list("abcabc")), [],
                           "[data] csv: label column 'y' of d.csv has 3 distinct values (a, b, c); allowed: exactly "
                           "two values, one of them favourable=1"),
    "sensitive-three-values": (lambda d: _csv(d, g=list("abcabc")), [],
                               "[data] csv: sensitive column 'g' of d.csv has 3 distinct values (a, b, c)"),
    "csv-missing": (lambda d: _csv(d).replace('"d.csv"', '"gone.csv"'), [], "[data] csv: csv file "),
    "favourable-absent": (lambda d: _csv(d).replace("favourable = 1", "favourable = 7"), [],
                          "[data] csv: favourable=7 does not occur in column 'y'; values: 0, 1"),
    "duplicate-alpha": (_with(collective={"alphas": [0.2, 0.3, 0.2]}), [],
                        "[collective] alphas: lists alpha 0.2 twice; allowed: distinct values"),
    "duplicate-budget": (_with(collective={"budgets": [0.2, 1.0, 0.2]}), [],
                         "[collective] budgets: lists budget 0.2 twice"),
    "firm-params": (_with(firm={"params": {"C": "high"}}), [],
                    "[firm] params: cannot build 'logistic-regression' with params {'C': 'high'}: The 'C' parameter "
                    "of LogisticRegression must be a float"),
    "firm-function": (_with(firm={"model": "subprocess:call"}), [],
                      "[firm] model: firm model 'subprocess:call' is a function, not a class; allowed: a scikit-learn "
                      "classifier class"),
    "firm-not-classifier": (_with(firm={"model": "sklearn.linear_model:LinearRegression"}), [],
                            "is not a scikit-learn classifier"),
    "name-escapes": (_with(name="../escape"), [], "name: '../escape' is not allowed (it names the results folder); "
                                                  "allowed: letters, digits, '.', '_' and '-'"),
    "name-absolute": (_with(name="/tmp/x"), [], "name: '/tmp/x' is not allowed"),
    "executor": (_with(engine={"executor": "spark"}), [], "[engine] executor: unknown executor 'spark'; "
                                                          "allowed: serial, processes"),
    "backend-flower-compares": ((CONFIGS / "compare-compas.toml").read_text(), ["--backend", "flower"],
                                "s.toml with --backend flower: [engine] backend: 'flower' cannot run [baselines] or "
                                "[defence]; allowed: 'vectorised'"),
    "seeds-repeated": (_toml(TOY), ["--seeds", "1,1"], "s.toml with --seeds 1,1: seeds: lists seed 1 twice; "
                                                       "allowed: distinct values"),
    "jobs-zero": (_toml(TOY), ["--jobs", "0"], "--jobs: 0 is not allowed; allowed: an int from 1 to 256, or -1"),
}

# Found by trying to break the command line (each was a traceback, silently accepted, several lines, or
# written into the results folder before failing). Every line must also say what is allowed.
BIG = 2**70  # tomllib reads it; TOML's integers are 64-bit
# 24 rows, both groups (g: b = protected) with both labels (y), 6 rows each.
GOOD_CSV = "x,g,y\n" + "".join(f"{i},{'ab'[i % 2]},{[0, 0, 1, 1][i % 4]}\n" for i in range(24))


def _csv_text(text, **options):
    """A callable writing ``text`` (None: a folder) as d.csv and returning its scenario."""
    def make(folder: Path) -> str:
        if text is None:
            (folder / "d.csv").mkdir()
        else:
            (folder / "d.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
        opts = {"path": "d.csv", "label": "y", "favourable": 1, "protected": "b", **options}
        return _toml({**TOY, "name": "csv", "data": {"dataset": "csv", "sensitive": "g", "options": opts}})
    return make


def _rows(old: str, new: str) -> str:
    assert old in GOOD_CSV
    return GOOD_CSV.replace(old, new, 1)


BAD_INPUTS.update({
    # ints beyond 64 bits, anywhere
    "seeds-beyond-int64": (_with(seeds=[BIG]), [], f"seeds: [{BIG}] is not allowed; allowed: a non-empty list of ints"),
    "n-beyond-int64": (_with(data={"options": {"n": BIG}}), [], f"[data] options.n: {BIG} does not fit in 64 bits; "
                                                                "allowed: integers from -2**63 to 2**63-1"),
    "budget-beyond-int64": (_with(collective={"budgets": [BIG]}), [], "[collective] budgets: 1180591620717411303424 "
                                                                      "does not fit in 64 bits"),
    "max-iter-beyond-int64": (_with(firm={"params": {"max_iter": BIG}}), [], "[firm] params.max_iter: "),
    # sizes numpy cannot allocate
    "n-too-large": (_with(data={"options": {"n": 2**62}}), [], f"[data] toy: option n={2**62} is not allowed; "
                                                                "allowed: an integer from 10 to 100_000_000"),
    "n-features-too-large": (_with(data={"dataset": "synthetic", "options": {"n": 200, "n_features": 10**10}}), [],
                             "[data] synthetic: option n_features=10000000000 is not allowed; allowed: an integer"),
    # data a run could not split, score or evaluate
    "no-minority-rows": (_with(data={"options": {"n": 200, "minority_fraction": 0.001}}), [],
                         "[data] toy: group (a=1, y=0) has no rows; allowed: data with at least 2 rows in each"),
    "no-minority-positives": (_with(data={"options": {"n": 300, "label_bias": 1e300}}), [],
                              "[data] toy: group (a=1, y=1) has no rows"),
    "features-overflow": (_with(data={"options": {"n": 300, "feature_shift": 1e300}}), [],
                          "[data] toy: feature 'x1' has a value of magnitude 1e+300"),
    "test-size-tiny": (_with(data={"test_size": 0.0001}), [], "[data] toy: cannot split with test_size=0.0001"),
    # wrong types and values in sections
    "description-int": (_with(description=3), [], "description: the integer 3 is not allowed; allowed: a string"),
    "include-sensitive-string": (_with(data={"include_sensitive": "yes"}), [],
                                 "[data] include_sensitive: the string 'yes' is not allowed; allowed: true or false"),
    "methods-nested": (_with(collective={"methods": [["random"]]}), [],
                       "[collective] methods: unknown method ['random']; allowed: rb-prob"),
    "backend-list": (_with(engine={"backend": ["x"]}), [], "[engine] backend: unknown backend ['x']; allowed: vectorised"),
    "n-jobs-huge": (_with(engine={"n_jobs": 100000}), [], "[engine] n_jobs: 100000 is not allowed; allowed: an int "
                                                          "from 1 to 256"),
    "flower-both-spellings": (_toml(TOY) + "[flower]\nagents_per_node = 5\nagents-per-node = 7\n", [],
                              "[flower] agents_per_node: is given twice"),
    "flower-timeout-nan": (_with(flower={"timeout": float("nan")}), [], "[flower] timeout: nan is not allowed; "
                                                                        "allowed: a finite number of seconds > 0"),
    "flower-timeout-inf": (_with(flower={"timeout": float("inf")}), [], "[flower] timeout: inf is not allowed"),
    "baseline-grid-nan": (_with(baselines={"methods": ["threshold-optimizer"],
                                           "grids": {"threshold-optimizer": [float("nan")]}}), [],
                          "[baselines] grids.threshold-optimizer: nan is not allowed; allowed: numbers in [0, 1]"),
    "baseline-grid-inf": (_with(baselines={"methods": ["massaging"], "grids": {"massaging": [float("inf")]}}), [],
                          "[baselines] grids.massaging: inf is not allowed; allowed: numbers >= 0"),
    "defence-methods-nested": (_with(defence={"methods": [["random"]]}), [],
                               "[defence] methods: the list ['random'] is not allowed"),
    "defence-cv-too-many": (_with(defence={"cv": 100000}), [], "[defence] cv: 100000 folds, but the training rows "
                                                               "have only"),
    # firm models that build but cannot train on the data (failed mid-run)
    "firm-l1-lbfgs": (_with(firm={"params": {"solver": "lbfgs", "penalty": "l1"}}), [],
                      "[firm] params: 'logistic-regression': LogisticRegression cannot be trained on this data: "
                      "Solver lbfgs supports only"),
    "firm-class-weight": (_with(firm={"params": {"class_weight": {"a": 1}}}), [], "are not in class_weight"),
    "firm-needs-non-negative": (_with(firm={"model": "sklearn.naive_bayes:CategoricalNB"}), [],
                                "[firm] model: 'sklearn.naive_bayes:CategoricalNB': CategoricalNB cannot be trained"),
    "firm-os-system": (_with(firm={"model": "os:system"}), [], "[firm] model: firm model 'os:system' is a "
                                                               "builtin_function_or_method, not a class"),
    # csv files and options
    "csv-path-int": (_csv_text(GOOD_CSV, path=5), [], "[data] csv: option path=5 is not allowed; allowed: a path"),
    "csv-label-list": (_csv_text(GOOD_CSV, label=["y"]), [], "[data] csv: option label=['y'] is not allowed"),
    "csv-favourable-table": (_csv_text(GOOD_CSV, favourable={"a": 1}), [], "option favourable={'a': 1} is not allowed"),
    "csv-categorical-string": (_csv_text(GOOD_CSV, categorical="x"), [], "option categorical='x' is not allowed; "
                                                                         "allowed: a list of column names"),
    "csv-features-string": (_csv_text(GOOD_CSV, features="x"), [], "option features='x' is not allowed"),
    "csv-name-int": (_csv_text(GOOD_CSV, name=5), [], "option name=5 is not allowed; allowed: a non-empty string"),
    "csv-empty": (_csv_text(""), [], "[data] csv: cannot parse csv file"),
    "csv-header-only": (_csv_text("x,g,y\n"), [], "[data] csv: d.csv has a header but no data rows; allowed:"),
    "csv-not-utf8": (_csv_text(GOOD_CSV.replace(",a,", ",\xe9,").encode("latin-1")), [], "'utf-8' codec can't decode"),
    "csv-directory": (_csv_text(None), [], "is not a regular file (a directory or a device)"),
    "csv-missing-label": (_csv_text(GOOD_CSV, label="z"), [], "label column 'z' is not in d.csv; allowed: one of x, g, y"),
    "csv-label-one-value": (_csv_text(GOOD_CSV.replace(",1\n", ",0\n")), [],
                            "label column 'y' of d.csv holds a single value (0); allowed: exactly two values"),
    "csv-one-group": (_csv_text(GOOD_CSV.replace(",b,", ",a,")), [],
                      "sensitive column 'g' of d.csv holds a single value (a); allowed: exactly two values"),
    "csv-sensitive-nan": (_csv_text(_rows("\n2,a,1", "\n2,,1")), [], "column(s) 'g' of d.csv have missing values"),
    "csv-single-row-per-group": (_csv_text("x,g,y\n1,a,0\n2,b,1\n3,a,1\n4,b,0\n5,a,0\n"), [],
                                 "[data] d: group (a=0, y=1) has a single row; allowed: data with at least 2 rows"),
    "csv-number-column-with-text": (_csv_text(_rows("\n5,b,0", "\nfive,b,0")), [],
                                    "column 'x' of d.csv mixes numbers and text (data row 6: 'five'); allowed:"),
    "csv-duplicated-label": (_csv_text(GOOD_CSV.replace("x,g,y\n", "x,g,y,y\n").replace("\n", ",0\n")
                                       .replace("x,g,y,y,0\n", "x,g,y,y\n")), [],
                             "column name(s) 'y' occur more than once in the header of d.csv"),
    "csv-infinite-value": (_csv_text(_rows("\n5,b,0", "\ninf,b,0")), [],
                           "column 'x' of d.csv has a non-finite value (data row 6: inf); allowed: finite numbers"),
    "csv-huge-value": (_csv_text(_rows("\n5,b,0", "\n1e200,b,0")), [],
                       "[data] d: feature 'x' has a value of magnitude 1e+200"),
    # command-line flags
    "seeds-empty": (_toml(TOY), ["--seeds", ""], "--seeds '': not a list of seeds; allowed: comma-separated ints"),
    "seeds-other-digits": (_toml(TOY), ["--seeds", "\u0663"], "--seeds '\u0663': not a list of seeds"),
    "seeds-underscore": (_toml(TOY), ["--seeds", "1_0"], "--seeds '1_0': not a list of seeds"),
    "flag-seeds-beyond-int64": (_toml(TOY), ["--seeds", str(BIG)], f"with --seeds {BIG}: seeds: [{BIG}] is not allowed"),
    "jobs-huge": (_toml(TOY), ["--jobs", "100000"], "--jobs: 100000 is not allowed; allowed: an int from 1 to 256"),
    "jobs-text": (_toml(TOY), ["--jobs", "abc"], "--jobs: invalid int value: 'abc'; allowed: see "
                                                 "'collective-fairness run --help'"),
    "backend-unknown": (_toml(TOY), ["--backend", "ray"], "--backend: invalid choice: 'ray'"),
    "unknown-flag": (_toml(TOY), ["--foo"], "unrecognized arguments: --foo; allowed: see 'collective-fairness --help'"),
    "out-empty": (_toml(TOY), ["--out", ""], "--out '': an empty path; allowed: a folder path"),
    "out-a-file": (_toml(TOY), ["--out", "in/s.toml"], "--out 'in/s.toml': is a file, not a folder; allowed:"),
})


def _edge_list(text: str, **graph):
    """A callable writing ``text`` as edges.txt and returning a gossip scenario over it."""
    def make(folder: Path) -> str:
        (folder / "edges.txt").write_text(text)
        return _with(dynamics={"rounds": 2, "coordination": "gossip",
                               "graph": {"kind": "edge-list", "path": "edges.txt", **graph}})
    return make


BAD_INPUTS.update({
    # [dynamics] (simulations.dynamics): one line per bad value, before anything is written
    "dynamics-compliance": (_with(dynamics={"compliance": 1.5}), [],
                            "[dynamics] compliance: 1.5 is not allowed; allowed: a probability in [0, 1]"),
    "dynamics-dropout-negative": (_with(dynamics={"dropout": -0.1}), [],
                                  "[dynamics] dropout: -0.1 is not allowed; allowed: a probability in [0, 1]"),
    "dynamics-participation": (_with(dynamics={"participation": "magic"}), [],
                               "[dynamics] participation: unknown participation mode 'magic'; allowed: fixed, "
                               "threshold, benefit-cost"),
    "dynamics-graph-kind": (_with(dynamics={"coordination": "gossip", "graph": {"kind": "ring"}}), [],
                            "[dynamics.graph] kind: unknown graph kind 'ring'; allowed: complete, erdos-renyi, "
                            "barabasi-albert, watts-strogatz, sbm, edge-list"),
    "dynamics-graph-parameter": (_with(dynamics={"coordination": "gossip", "graph": {"kind": "erdos-renyi", "m": 3}}),
                                 [], "[dynamics.graph] m: is not a parameter of kind 'erdos-renyi'; allowed: "
                                     "mean_degree"),
    "dynamics-reach-nobody": (_with(dynamics={"coordination": "reach"}), [],
                              "[dynamics] organisers: is 0, so coordination 'reach' reaches nobody"),
    "dynamics-unused-key": (_with(dynamics={"hops": 2}), [], "[dynamics] hops: is only read when coordination = "
                                                             "'reach' (here coordination = ['coordinator']); allowed:"),
    "dynamics-coordination-twice": (_with(dynamics={"coordination": ["gossip", "gossip"]}), [],
                                    "[dynamics] coordination: lists coordination 'gossip' twice"),
    "dynamics-rounds-zero": (_with(dynamics={"rounds": 0}), [], "[dynamics] rounds: 0 is not allowed; allowed: an int "
                                                                "from 1 to 100000"),
    "dynamics-flower": (_with(dynamics={"rounds": 2}), ["--backend", "flower"],
                        "[dynamics]: the flower backend cannot run [engine] warm_start as set; allowed: on flower, "
                        "participation 'fixed'"),
    "dynamics-with-defence": (_with(dynamics={"rounds": 2}, defence={"audits": ["trusted-sample"]}), [],
                              "[dynamics]: cannot run with [baselines] or [defence]"),
    "dynamics-graph-too-dense": (_with(dynamics={"coordination": "gossip",
                                                 "graph": {"kind": "barabasi-albert", "m": 100000}}), [],
                                 "[dynamics.graph] barabasi-albert m must be an integer in [1, "),
    "dynamics-edge-list-unknown-user": (_edge_list("0 999999\n"), [], "[dynamics.graph] edge list "),
    "dynamics-edge-list-missing": (lambda d: _edge_list("")(d).replace("edges.txt", "gone.txt"), [],
                                   "[dynamics.graph] edge list "),
})

@pytest.mark.parametrize(
    "case, command",
    [(case, command) for case, (_, extra, _) in BAD_INPUTS.items() for command in ("run", "validate")
     if command == "run" or not extra],
)
def test_every_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, case, command):
    content, extra, message = BAD_INPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "s.toml"
    if content is None:
        path.mkdir()
    else:
        content = content(folder) if callable(content) else content
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)  # a default results/ folder would appear here
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out"
    args = [command, str(path)] + (["--out", str(out), "--quiet", *extra] if command == "run" else [])
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collective-fairness: error: "), captured.err
    assert message in lines[0], lines[0]
    assert "; allowed: " in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before and not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: command; allowed: see 'collective-fairness --help'"),
        (["frobnicate"], "command: invalid choice: 'frobnicate'"),
        (["validate"], "the following arguments are required: configs; allowed: see 'collective-fairness validate"),
        (["run", "a.toml", "b.toml"], "unrecognized arguments: b.toml"),
    ],
)
def test_command_line_mistakes_are_one_line_not_a_usage_block(capsys, args, message):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == f"collective-fairness: error: {message}" + captured.err.split(message, 1)[1]
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err and captured.out == ""


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x01\x02\xff\xfe", "not a readable results table"),
        (b"", "not a readable results table (No columns to parse from file)"),
        (b"a,b\n1,2\n", "missing column(s) seed, method"),
        ((",".join(REQUIRED_COLUMNS) + "\n").encode(), "needs base-model rows (method 'base') and collective rows"),
        ((",".join(REQUIRED_COLUMNS) + "\n0,base,x,y,z,w,v,u\n0,random,x,y,z,w,v,u\n").encode(),
         "column alpha has 'x' in data row 1; allowed: numbers"),
        ((",".join(REQUIRED_COLUMNS) + "\n0,base,,,,,,\n0,random,,,,,,\n").encode(),
         "column flips has nan in data row 1; allowed: numbers"),
        (None, "cannot read (Is a directory)"),
    ],
)
def test_a_bad_runs_csv_is_one_line(tmp_path, capsys, content, message):
    folder = tmp_path / "res"
    folder.mkdir()
    if content is None:
        (folder / "runs.csv").mkdir()
    else:
        (folder / "runs.csv").write_bytes(content)
    before = sorted(tmp_path.rglob("*"))
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"collective-fairness: error: {folder}/runs.csv: ")
    assert message in err and "; allowed: " in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--agents-per-node", "-1"], "s.toml with --agents-per-node -1: [flower] agents-per-node: -1 is not allowed; "
                                      "allowed: an int >= 1"),
        (["--agents-per-node", str(BIG)], f"[flower] agents_per_node: {BIG} does not fit in 64 bits"),
        (["--seed", "-3"], "s.toml with --seed -3: seeds: [-3] is not allowed; allowed: a non-empty list of ints"),
        (["--seed", str(BIG)], f"seeds: [{BIG}] is not allowed"),
        (["--seed", "abc"], "--seed: invalid int value: 'abc'; allowed: see 'collective-fairness-deploy --help'"),
        (["--rounds", "0"], "s.toml with --rounds 0: [flower] rounds: 0 is not allowed; allowed: an int >= 1"),
        (["--frob"], "unrecognized arguments: --frob; allowed: see"),
        (["--workdir", "in/s.toml", "--evaluate"], "--workdir 'in/s.toml': cannot write the node files (Not a directory); allowed:"),
    ],
)
def test_deploy_bad_flags_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, extra, message):
    from simulations.flower.deploy import main as deploy

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "s.toml").write_text(_with(data={"options": {"n": 200}}))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert deploy(["in/s.toml", "--print-commands", "--workdir", "wd", *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collective-fairness-deploy: error: "), captured.err
    assert message in lines[0] and "; allowed: " in lines[0] and captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_deploy_missing_config_is_one_line(tmp_path, capsys):
    from simulations.flower.deploy import main as deploy

    assert deploy([str(tmp_path / "nosuch.toml"), "--print-commands", "--workdir", str(tmp_path / "wd")]) == 2
    assert capsys.readouterr().err.strip() == (f"collective-fairness-deploy: error: {tmp_path}/nosuch.toml: no such "
                                               "scenario file; allowed: a UTF-8 TOML scenario file (see configs/)")
    assert not (tmp_path / "wd").exists()


def test_a_folder_of_another_scenario_is_refused_before_anything_is_written(tmp_path, config, capsys):
    out = tmp_path / "res"
    (out / "partial").mkdir(parents=True)
    (out / "scenario.toml").write_text(_with(name="other"))
    (out / "partial" / "seed-0.csv").write_text("seed\n0\n")
    before = sorted(out.rglob("*"))
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"collective-fairness: error: {out}: holds results of a different scenario; allowed: the "
                           "same scenario (new seeds extend it), --fresh to overwrite them, or --out to use another "
                           "folder")
    assert sorted(out.rglob("*")) == before  # not even a lock file


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path, config, monkeypatch, capsys):
    from agents.errors import DataError

    def failing(scenario):
        def run_seed(*args, **kwargs):
            raise DataError("boom")
        return run_seed

    monkeypatch.setattr("simulations.runner.backend_run_seed", failing)
    out = tmp_path / "new" / "res"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "collective-fairness: error: boom"
    assert not (tmp_path / "new").exists()  # every folder the run created is gone


def test_run_without_a_config_is_still_the_default_experiment(monkeypatch):
    from simulations import cli

    seen = {}
    monkeypatch.setattr("simulations.runner.run_into", lambda scenario, out, **kw: seen.update(s=scenario, out=out)
                        or (None, "summary"))
    monkeypatch.setattr("simulations.scenario.Scenario.check_data", lambda self, source="scenario": None)
    assert cli.main(["run", "--quiet"]) == 0
    assert seen["s"].name == "paper-adult" and seen["out"] == Path("results") / "paper-adult"


def test_validate_checks_data_files_and_values(tmp_path, capsys):
    assert main(["validate", str(CONFIGS / "user-csv.toml"), str(CONFIGS / "paper-adult.toml")]) == 0
    printed = capsys.readouterr().out
    assert "user-csv.toml: ok" in printed and "paper-adult.toml: ok" in printed


# --------------------------------------------------------------------------- killing the CLI


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (a /proc walk)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), set()).add(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_worker_processes(tmp_path):
    scenario = tmp_path / "long.toml"
    scenario.write_text(tomli_w.dumps({
        **TOY, "name": "toy-sigterm", "seeds": list(range(40)), "data": {"dataset": "toy", "options": {"n": 4000}},
        "collective": {"methods": ["rb-prob", "random"], "alphas": [0.1, 0.2, 0.3, 0.4], "budgets": [0.1, 0.5, 1.0]},
        "engine": {"n_jobs": 2}}))
    proc = subprocess.Popen([sys.executable, "-m", "simulations.cli", "run", str(scenario), "--out",
                             str(tmp_path / "out"), "--quiet", "--no-plots"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        workers = set()
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            time.sleep(0.2)
            workers = _children(proc.pid)
        assert proc.poll() is None, proc.stderr.read()
        assert len(workers) >= 2, "no worker processes started"
        time.sleep(0.5)
        workers |= _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "collective-fairness: interrupted; run the same command again to resume" in err
    assert "Traceback" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the CLI"


@pytest.mark.parametrize("outcome, code", [("error", 2), ("interrupt", 130), ("ok", 0)])
def test_main_always_stops_workers_and_backends(monkeypatch, capsys, outcome, code):
    from simulations import backends, cli, executors

    calls = []
    monkeypatch.setattr(executors, "shutdown_workers", lambda: calls.append("workers"))
    monkeypatch.setattr(backends, "close_backends", lambda: calls.append("backends"))

    def validate(args):
        if outcome == "interrupt":
            raise KeyboardInterrupt
        if outcome == "error":
            raise cli.ConfigError("bad")
        return 0

    monkeypatch.setattr(cli, "_validate", validate)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["validate", "x.toml"]) == code
    assert calls == ["workers", "backends"]
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is only installed for the call

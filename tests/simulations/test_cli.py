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
    assert "holds results of a different scenario; pass --fresh" in capsys.readouterr().err
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
    "seeds-repeated": (_toml(TOY), ["--seeds", "1,1"], "--seeds '1,1': allowed: distinct comma-separated ints"),
    "jobs-zero": (_toml(TOY), ["--jobs", "0"], "--jobs 0: allowed: an int >= 1"),
}


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
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before and not out.exists()


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

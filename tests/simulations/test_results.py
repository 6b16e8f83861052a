"""Results folders: one run at a time, seeds extend a folder, unwritable folders fail in one line."""

import errno
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import tomli_w
import tomllib

from agents.errors import ConfigError, DataError
from simulations.cli import main
from simulations.results import REQUIRED_COLUMNS, ResultsFolder
from simulations.scenario import load_scenario

TOY = {
    "name": "toy-results",
    "seeds": [0],
    "data": {"dataset": "toy", "options": {"n": 1200}},
    "collective": {"methods": ["random"], "alphas": [0.3], "budgets": [0.2, 1.0]},
    "engine": {"n_jobs": 1},
}


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(tomli_w.dumps(TOY))
    return path


def run(config, out, *extra) -> int:
    return main(["run", str(config), "--out", str(out), "--quiet", "--no-plots", *extra])


def listing(folder: Path) -> dict:
    """Every file under ``folder`` with its content, to show that nothing was written."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def one_error_line(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collective-fairness: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture
def unwritable(monkeypatch):
    """Make writes under a folder fail with EACCES (chmod, and for root, who ignores modes, a guard)."""
    changed = []

    def apply(folder: Path, *, only: str | None = None):
        folder = folder.resolve()

        def refused(path) -> bool:
            p = Path(path).resolve()
            return (p == folder or folder in p.parents) and (only is None or only in p.name)

        def deny(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        real_mkstemp, real_open = tempfile.mkstemp, os.open

        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            if dir is not None and refused(Path(dir) / (prefix or "")):
                deny(dir)
            return real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)

        def open_(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and refused(path):
                deny(path)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "open", open_)
        if only is None:
            folder.chmod(0o555)
            changed.append(folder)

    yield apply
    for folder in changed:
        folder.chmod(0o755)


# --------------------------------------------------------------------------- the lock


def test_a_second_run_into_a_folder_in_use_stops_with_one_line(tmp_path, config, capsys):
    out = tmp_path / "res"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom simulations.results import ResultsFolder\n"
         f"with ResultsFolder({str(out)!r}).lock():\n    print('locked', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = listing(out)
        line = one_error_line(capsys, run(config, out))
        assert line == (f"collective-fairness: error: {out}: is in use by another run (pid {holder.pid}); "
                        "allowed: a folder no run is using (wait for it, or use --out)")
        assert listing(out) == before  # nothing written, no scenarios mixed
    finally:
        holder.kill()
        holder.wait()
    # The killed holder leaves its lock file behind; the kernel dropped the lock itself.
    assert (out / ResultsFolder.LOCK).exists()
    assert run(config, out) == 0
    assert (out / "runs.csv").exists()


def test_the_lock_is_released_when_a_run_fails(tmp_path, config, monkeypatch):
    out = tmp_path / "res"

    def broken(self, seed):
        raise DataError("boom")

    with monkeypatch.context() as m:
        m.setattr(ResultsFolder, "load_seed", broken)
        assert run(config, out) == 2
    folder = ResultsFolder(out)
    with folder.lock():  # free again
        with pytest.raises(DataError, match=rf"{out}: is in use by another run \(pid {os.getpid()}\)"):
            with ResultsFolder(out).lock():
                pass


# --------------------------------------------------------------------------- seeds extend a folder


def test_adding_seeds_extends_a_finished_folder(tmp_path, config, capsys):
    out = tmp_path / "res"
    assert run(config, out, "--seeds", "0") == 0
    seed0 = (out / "partial" / "seed-0.csv").read_bytes()
    stamp = (out / "partial" / "seed-0.csv").stat().st_mtime_ns
    assert run(config, out, "--seeds", "1") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["resumed_seeds"] == [0]
    assert list(manifest["seconds_per_seed"]) == ["1"]  # only the new seed ran
    assert (out / "partial" / "seed-0.csv").stat().st_mtime_ns == stamp
    assert (out / "partial" / "seed-0.csv").read_bytes() == seed0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["seed"].unique()) == [0, 1] and len(runs) == 2 * 3
    assert tomllib.loads((out / "scenario.toml").read_text())["seeds"] == [0, 1]
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["seeds"]) == {2}
    # Stored order first, then the new ones; asking for finished seeds only re-reports.
    assert run(config, out, "--seeds", "2,0") == 0
    assert json.loads((out / "manifest.json").read_text())["seeds"] == [0, 1, 2]
    assert run(config, out, "--seeds", "1") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1, 2] and manifest["seconds_per_seed"] == {}


def test_a_different_scenario_still_needs_fresh(tmp_path, config, capsys):
    out = tmp_path / "res"
    assert run(config, out) == 0
    other = tmp_path / "other.toml"
    other.write_text(tomli_w.dumps({**TOY, "collective": {**TOY["collective"], "alphas": [0.2]}}))
    before = listing(out)
    line = one_error_line(capsys, run(other, out, "--seeds", "0,1"))
    assert line.endswith(f"{out}: holds results of a different scenario; allowed: the same scenario (new seeds "
                         "extend it), --fresh to overwrite them, or --out to use another folder")
    assert listing(out) == before
    assert run(other, out, "--seeds", "0,1", "--fresh") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["resumed_seeds"] == []


def test_start_returns_the_union_and_refuses_an_unreadable_stored_scenario(tmp_path, config):
    scenario = load_scenario(config)
    folder = ResultsFolder(tmp_path / "res")
    with folder.lock():
        held, done = folder.start(scenario.replace(seeds=(3, 1)))
        assert held.seeds == (3, 1) and done == []
        held, done = folder.start(scenario.replace(seeds=(0, 1)))
        assert held.seeds == (3, 1, 0) and held.replace(seeds=(0,)) == scenario
        folder.save_seed(3, pd.DataFrame({"seed": [3]}))
        assert folder.start(scenario.replace(seeds=(3,)))[1] == [3]
        folder.scenario_toml.write_bytes(b"\xff not toml")
        with pytest.raises(ConfigError, match="holds results of a different scenario"):
            folder.start(scenario)


# --------------------------------------------------------------------------- unwritable folders


def test_a_read_only_results_folder_is_one_line(tmp_path, config, capsys, unwritable):
    out = tmp_path / "res"
    out.mkdir()
    unwritable(out)
    line = one_error_line(capsys, run(config, out))
    assert line == (f"collective-fairness: error: {out}: cannot write the results folder (Permission denied); "
                    "allowed: a writable folder (make it writable or choose another with --out)")
    assert listing(out) == {}


def test_a_folder_made_read_only_mid_run_keeps_the_finished_seed(tmp_path, config, capsys, unwritable):
    out = tmp_path / "res"
    unwritable(out, only="seed-1")  # the folder refuses writes from the moment seed 1 is checkpointed
    line = one_error_line(capsys, run(config, out, "--seeds", "0,1"))
    target = out / "partial" / "seed-1.csv"
    match = re.fullmatch(
        rf"collective-fairness: error: {re.escape(str(target))}: cannot write the checkpoint of seed 1 "
        r"\(Permission denied\); its rows are saved in (\S+): make the folder writable, move that file to "
        rf"{re.escape(str(target))} and run again to resume", line)
    assert match, line
    rescue = Path(match.group(1))
    assert not rescue.is_relative_to(out) and rescue.exists()
    rows = pd.read_csv(rescue)
    assert set(rows["seed"]) == {1} and len(rows) == 3
    assert (out / "partial" / "seed-0.csv").exists() and not target.exists()
    assert not (out / "runs.csv").exists()


def test_the_rescued_seed_resumes(tmp_path, config, capsys, monkeypatch):
    out = tmp_path / "res"
    real = ResultsFolder.save_seed.__globals__["atomic_write_text"]

    def failing(path, text):
        if Path(path).name == "seed-1.csv":
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real(path, text)

    with monkeypatch.context() as m:
        m.setitem(ResultsFolder.save_seed.__globals__, "atomic_write_text", failing)
        line = one_error_line(capsys, run(config, out, "--seeds", "0,1"))
    assert "(Read-only file system); its rows are saved in " in line
    rescue = Path(re.search(r"its rows are saved in (\S+):", line).group(1))
    rescue.replace(out / "partial" / "seed-1.csv")
    assert run(config, out, "--seeds", "0,1") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_seeds"] == [0, 1] and manifest["seconds_per_seed"] == {}
    assert sorted(pd.read_csv(out / "runs.csv")["seed"].unique()) == [0, 1]


def test_report_into_a_read_only_folder_is_one_line(tmp_path, config, capsys, unwritable):
    out = tmp_path / "res"
    assert run(config, out) == 0
    capsys.readouterr()
    before = listing(out)
    unwritable(out)
    line = one_error_line(capsys, main(["report", str(out)]))
    assert line.endswith(f"{out}: cannot write the results folder (Permission denied); allowed: a writable "
                         "folder (make it writable or choose another with --out)")
    assert listing(out) == before


# --------------------------------------------------------------------------- report


def _table(**columns) -> pd.DataFrame:
    base = {"seed": [0, 0], "method": ["base", "random"], "alpha": [0.0, 0.3], "budget": [0.0, 0.2],
            "budget_kind": ["fraction", "fraction"], "flips": [0, 3], "error": [0.2, 0.21], "eqod": [0.1, 0.05]}
    base.update(columns)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    "table, message",
    [
        (_table(eqod=None, budget_kind=None), "runs.csv: missing column(s) budget_kind, eqod; allowed: a runs.csv "
                                              "written by 'collective-fairness run' (columns seed, method"),
        (_table(family=["base", "collective"]), "runs.csv: missing column(s) defence, adaptive"),
        (_table(method=["random", "random"]), "runs.csv: needs base-model rows (method 'base') and collective rows"),
        (pd.DataFrame(columns=list(REQUIRED_COLUMNS)), "needs base-model rows"),
    ],
)
def test_report_on_a_table_missing_columns_is_one_line(tmp_path, capsys, table, message):
    out = tmp_path / "res"
    out.mkdir()
    table.to_csv(out / "runs.csv", index=False)
    before = listing(out)
    line = one_error_line(capsys, main(["report", str(out)]))
    assert f"{out / 'runs.csv'}: " in line and message in line
    assert listing(out) == before

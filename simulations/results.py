"""Results folders: atomic writes, per-seed checkpoints and resumption.

A results folder holds the scenario it ran (``scenario.toml``), one
checkpoint per finished seed (``partial/seed-<s>.csv``), the tidy table of
every run (``runs.csv``) and a ``manifest.json`` (versions, seeds, timings).
Every file is written to a temporary name and renamed into place, so a
killed run leaves either the old file or the new one, never half of one, and
``run`` picks up from the last finished seed.

One run at a time: a run holds an exclusive ``flock`` on ``.lock`` in the
folder (the kernel drops it when the process dies, so a killed run never
blocks the next). A run of the same scenario with more seeds extends the
folder; a different scenario needs ``--fresh``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

import pandas as pd
import tomli_w

from agents.errors import ConfigError, DataError
from .scenario import Scenario

__all__ = ["REQUIRED_COLUMNS", "ResultsFolder", "atomic_write_bytes", "atomic_write_text", "environment"]

# What `report` needs of a runs.csv (tables with a "family" column also need "defence" and "adaptive").
REQUIRED_COLUMNS = ("seed", "method", "alpha", "budget", "budget_kind", "flips", "error", "eqod")
NUMERIC_COLUMNS = ("seed", "alpha", "budget", "flips", "error", "eqod")


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def environment() -> dict:
    """Versions a reader needs to re-run a result."""
    packages = ["collective-fairness", "numpy", "pandas", "scikit-learn", "fairlearn", "flwr", "ray", "networkx"]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


def _without_seeds(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k != "seeds"}


class ResultsFolder:
    """One scenario's results on disk."""

    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def runs_csv(self) -> Path:
        return self.path / "runs.csv"

    @property
    def scenario_toml(self) -> Path:
        return self.path / "scenario.toml"

    @property
    def rounds_csv(self) -> Path:
        """The per-round table of a ``[dynamics]`` scenario (:mod:`simulations.dynamics`)."""
        return self.path / "rounds.csv"

    def _partial(self, seed: int) -> Path:
        return self.path / "partial" / f"seed-{seed}.csv"

    def _partial_rounds(self, seed: int) -> Path:
        return self.path / "partial" / f"rounds-seed-{seed}.csv"

    def unwritable(self, exc: OSError) -> DataError:
        """The one-line error for a folder that cannot be written."""
        what = exc.strerror or str(exc)
        return DataError(f"{self.path}: cannot write the results folder ({what}); "
                         "allowed: a writable folder (make it writable or choose another with --out)")

    @contextlib.contextmanager
    def lock(self):
        """Hold the folder for one run; a second run into it fails with one line naming this one's pid.

        ``flock`` (exclusive, non-blocking) on ``.lock``: released when the run ends, fails or is
        killed (the kernel drops it with the process), so a stale lock file never blocks. A run
        that fails before its first checkpoint removes the folders it created: a bad input
        leaves nothing behind.
        """
        created = next((p for p in reversed((self.path, *self.path.parents)) if not p.exists()), None)
        locked = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except OSError as exc:
            raise self.unwritable(exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise DataError(f"{self.path}: is in use by another run (pid {pid}); "
                                "allowed: a folder no run is using (wait for it, or use --out)") from None
            locked = True  # only the run holding the lock may remove what it created
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        except BaseException:
            if locked and created is not None and not any((self.path / "partial").glob("seed-*.csv")):
                shutil.rmtree(created, ignore_errors=True)  # still locked: no other run sees it half-removed
            raise
        finally:
            os.close(fd)  # releases the lock

    def _stored(self) -> dict | None:
        """The scenario the folder holds, as TOML tables (None: none, or unreadable)."""
        try:
            return tomllib.loads(self.scenario_toml.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return {}

    def holds(self, scenario: Scenario, *, fresh: bool = False) -> Scenario:
        """The scenario this folder would hold after a run of ``scenario``, read-only.

        The same scenario with other seeds extends the folder: its seeds become the union
        (stored order, then the new ones). Any other difference needs ``fresh``: mixing the
        checkpoints of two scenarios would silently corrupt the table. Called before a run
        (nothing written yet) and again by :meth:`start` under the lock.
        """
        stored = None if fresh else self._stored()
        if stored is None:
            return scenario
        new = tomllib.loads(tomli_w.dumps(scenario.to_dict()))  # compared as TOML reads them back
        if stored and _without_seeds(stored) == _without_seeds(new):
            old = [s for s in stored.get("seeds", []) if isinstance(s, int)]
            seeds = tuple(dict.fromkeys([*old, *scenario.seeds]))
            return scenario.replace(str(self.scenario_toml), seeds=seeds) if seeds != scenario.seeds else scenario
        if any((self.path / "partial").glob("seed-*.csv")):
            raise ConfigError(
                f"{self.path}: holds results of a different scenario; allowed: the same scenario (new "
                "seeds extend it), --fresh to overwrite them, or --out to use another folder"
            )
        return scenario

    def start(self, scenario: Scenario, *, fresh: bool = False) -> tuple[Scenario, list[int]]:
        """Claim the folder for ``scenario`` (see :meth:`holds`); returns the scenario it now holds and
        the seeds already finished. Call it while holding :meth:`lock`.
        """
        try:
            if fresh and (self.path / "partial").exists():
                shutil.rmtree(self.path / "partial")
            scenario = self.holds(scenario, fresh=fresh)
            atomic_write_text(self.scenario_toml, tomli_w.dumps(scenario.to_dict()))
        except OSError as exc:
            raise self.unwritable(exc) from None
        return scenario, [s for s in scenario.seeds if self._partial(s).exists()]

    def save_seed(self, seed: int, frame: pd.DataFrame) -> None:
        """Checkpoint one finished seed; if the folder cannot take it, its rows go to a temporary file."""
        text = frame.to_csv(index=False)
        target = self._partial(seed)
        try:
            atomic_write_text(target, text)
            return
        except OSError as exc:
            why = exc.strerror or str(exc)
        try:
            fd, rescue = tempfile.mkstemp(prefix=f"collective-fairness-seed-{seed}-", suffix=".csv")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise DataError(f"{target}: cannot write the checkpoint of seed {seed} ({why}), nor a copy in "
                            f"{tempfile.gettempdir()} ({exc.strerror}); the seed must be run again") from None
        raise DataError(f"{target}: cannot write the checkpoint of seed {seed} ({why}); its rows are saved in "
                        f"{rescue}: make the folder writable, move that file to {target} and run again to resume")

    def load_seed(self, seed: int) -> pd.DataFrame:
        return pd.read_csv(self._partial(seed))

    def save_rounds(self, seed: int, frame: pd.DataFrame) -> None:
        """Checkpoint one seed's per-round table; saved before the seed's own checkpoint, so
        a seed counted as finished always has its rounds."""
        try:
            atomic_write_text(self._partial_rounds(seed), frame.to_csv(index=False))
        except OSError as exc:
            raise self.unwritable(exc) from None

    def load_rounds(self, seed: int) -> pd.DataFrame:
        return pd.read_csv(self._partial_rounds(seed))

    def finish_rounds(self, frame: pd.DataFrame) -> None:
        atomic_write_text(self.rounds_csv, frame.to_csv(index=False))

    def finish(self, scenario: Scenario, frame: pd.DataFrame, *, extra: dict | None = None) -> None:
        atomic_write_text(self.runs_csv, frame.to_csv(index=False))
        manifest = {"scenario": scenario.name, "seeds": list(scenario.seeds), "rows": len(frame),
                    "environment": environment(), **(extra or {})}
        atomic_write_text(self.path / "manifest.json", json.dumps(manifest, indent=2, default=str))

    @classmethod
    def open(cls, path: str | Path) -> "ResultsFolder":
        """An existing folder (or a ``runs.csv`` inside one) for reporting."""
        path = Path(path)
        if path.is_file() and path.name.endswith(".csv"):
            path = path.parent
        folder = cls(path)
        if not folder.runs_csv.exists():
            raise DataError(f"{path}: no runs.csv here; allowed: a folder written by 'collective-fairness run' "
                            "(or its runs.csv)")
        return folder

    def runs(self) -> pd.DataFrame:
        """The table of every run, checked to hold what the summaries and figures need."""
        allowed = "allowed: a runs.csv written by 'collective-fairness run'"
        try:
            runs = pd.read_csv(self.runs_csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            first = " ".join(str(exc).split())
            raise DataError(f"{self.runs_csv}: not a readable results table ({first}); {allowed}") from None
        except OSError as exc:
            raise DataError(f"{self.runs_csv}: cannot read ({exc.strerror}); {allowed}") from None
        needed = REQUIRED_COLUMNS + (("defence", "adaptive") if "family" in runs.columns else ())
        missing = [c for c in needed if c not in runs.columns]
        if missing:
            raise DataError(f"{self.runs_csv}: missing column(s) {', '.join(missing)}; allowed: a runs.csv "
                            f"written by 'collective-fairness run' (columns {', '.join(needed)}, ...)")
        for column in NUMERIC_COLUMNS:
            values = pd.to_numeric(runs[column], errors="coerce")
            bad = values.isna() & runs[column].notna()
            if column not in ("alpha", "budget"):  # NaN only where a firm-side row has no cell
                bad |= runs[column].isna()
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                value = runs[column].iloc[row]
                shown = repr(value) if isinstance(value, str) else str(value)
                raise DataError(f"{self.runs_csv}: column {column} has {shown} in data row {row + 1}; "
                                "allowed: numbers (a runs.csv written by 'collective-fairness run')")
        if not (runs["method"] == "base").any() or (runs["method"] == "base").all():
            raise DataError(f"{self.runs_csv}: needs base-model rows (method 'base') and collective rows; "
                            f"{allowed}")
        return runs

    def scenario(self) -> Scenario | None:
        from .scenario import load_scenario

        return load_scenario(self.scenario_toml) if self.scenario_toml.exists() else None

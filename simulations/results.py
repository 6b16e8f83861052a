"""Results folders: atomic writes, per-seed checkpoints and resumption.

A results folder holds the scenario it ran (``scenario.toml``), one
checkpoint per finished seed (``partial/seed-<s>.csv``), the tidy table of
every run (``runs.csv``) and a ``manifest.json`` (versions, seeds, timings).
Every file is written to a temporary name and renamed into place, so a
killed run leaves either the old file or the new one, never half of one, and
``run`` picks up from the last finished seed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd
import tomli_w

from agents.errors import ConfigError, DataError
from .scenario import Scenario

__all__ = ["ResultsFolder", "atomic_write_bytes", "atomic_write_text", "environment"]


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


class ResultsFolder:
    """One scenario's results on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def runs_csv(self) -> Path:
        return self.path / "runs.csv"

    @property
    def scenario_toml(self) -> Path:
        return self.path / "scenario.toml"

    def _partial(self, seed: int) -> Path:
        return self.path / "partial" / f"seed-{seed}.csv"

    def start(self, scenario: Scenario, *, fresh: bool = False) -> list[int]:
        """Claim the folder for ``scenario``; returns the seeds already finished.

        Resuming is only allowed for the same scenario: mixing the checkpoints
        of two different scenarios would silently corrupt the table.
        """
        text = tomli_w.dumps(scenario.to_dict())
        if fresh and (self.path / "partial").exists():
            shutil.rmtree(self.path / "partial")
        if self.scenario_toml.exists() and not fresh:
            if self.scenario_toml.read_text(encoding="utf-8") != text:
                if any((self.path / "partial").glob("seed-*.csv")):
                    raise ConfigError(
                        f"{self.path}: holds results of a different scenario; pass --fresh to overwrite "
                        "them or --out to use another folder"
                    )
        atomic_write_text(self.scenario_toml, text)
        return [s for s in scenario.seeds if self._partial(s).exists()]

    def save_seed(self, seed: int, frame: pd.DataFrame) -> None:
        atomic_write_text(self._partial(seed), frame.to_csv(index=False))

    def load_seed(self, seed: int) -> pd.DataFrame:
        return pd.read_csv(self._partial(seed))

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
            raise DataError(f"{path}: no runs.csv here; give a folder written by 'collective-fairness run'")
        return folder

    def runs(self) -> pd.DataFrame:
        try:
            return pd.read_csv(self.runs_csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.runs_csv}: not a readable results table ({exc})") from None

    def scenario(self) -> Scenario | None:
        from .scenario import load_scenario

        return load_scenario(self.scenario_toml) if self.scenario_toml.exists() else None

"""ACS-Income: the US Census American Community Survey income task, through folktables.

``load_acs_income`` gives the fields of the :class:`simulations.datasets.Dataset` that
``load_dataset("acs-income")`` returns (this module imports nothing of ``datasets``, which
imports it). The task is folktables' ``ACSIncome`` (Ding, Hardt, Miller and Schmidt,
*Retiring Adult*, 2021): its feature list, its target ``PINCP > 50000`` and its
``adult_filter`` (``AGEP > 16``, ``PINCP > 100``, ``WKHP > 0``, ``PWGTP >= 1``), applied
to the PUMS person file of each requested state.

Where the PUMS files come from (``docs/datasets.md``), per state, in this order:

1. the cache folder ``<data_home>/acs/<year>/<horizon>/`` (``load_dataset`` resolves
   ``data_home``: the argument, else ``$COLLECTIVE_FAIRNESS_DATA_HOME``, else
   ``~/.cache/collective-fairness``);
2. the mirror folder ``<mirror>/acs/<year>/<horizon>/`` if a mirror is configured
   (``mirror=`` or ``$COLLECTIVE_FAIRNESS_MIRROR``): read in place, the network is never
   used, a missing file is a :class:`DataError`;
3. otherwise folktables downloads the state's zip from www2.census.gov and the extracted
   CSV is moved into the cache folder.

The layout below ``acs/`` is folktables' own (``<root>/<year>/<horizon>/psam_p<code>.csv``),
so a folktables ``data`` folder can be copied as ``<mirror>/acs``. The files are read with
``folktables.ACSDataSource.get_data``. Unlike COMPAS and German there is no pinned SHA-256:
there is one file per state, year and horizon; the columns the task needs are checked instead.

``folktables`` is imported on first use, so the other data sets work without it.
"""

from __future__ import annotations

import functools
import importlib
import numbers
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.errors import ConfigError, DataError

__all__ = ["ACS_NAME", "ACS_OPTIONS", "ACS_SENSITIVE", "load_acs_income", "pums_filename", "pums_url"]

ACS_NAME = "acs-income"
ACS_OPTIONS = ("states", "year", "horizon", "survey", "n", "random_state")
ACS_SENSITIVE = ("sex", "race")  # the first is the default
HORIZONS = ("1-Year", "5-Year")
FIRST_YEAR = 2014  # folktables reads PUMS files from 2014 on
DEFAULTS = {"states": ("CA",), "year": 2018, "horizon": "1-Year", "survey": "person", "n": None,
            "random_state": 0}

# Sensitive attribute -> (PUMS column, protected value description). SEX: 1 male, 2 female.
# RAC1P: 1 "White alone"; 2-9 every other race code (Black, American Indian, Alaska Native,
# tribes specified, Asian, Native Hawaiian / Pacific Islander, some other race, two or more).
_COLUMN = {"sex": "SEX", "race": "RAC1P"}
_PROTECTED = {"sex": "female (SEX == 2)", "race": "non-White (RAC1P != 1, i.e. not 'White alone')"}
_NUMERICAL = ("AGEP", "WKHP")  # age, usual hours worked per week; every other feature is a code
_FILTER_COLUMNS = ("AGEP", "PINCP", "WKHP", "PWGTP")  # what folktables' adult_filter reads


def _folktables():
    try:
        import folktables
    except ImportError as exc:
        raise DataError(
            f"dataset {ACS_NAME!r} needs the folktables package ({exc}); allowed: install it with "
            "`pip install folktables==0.0.12` (a dependency of collective-fairness)"
        ) from None
    return folktables


def _load_acs_module():
    """The module folktables.load_acs (the attribute ``folktables.load_acs`` is its function)."""
    _folktables()
    return importlib.import_module("folktables.load_acs")


# --------------------------------------------------------------------------- files


def pums_filename(state: str, year: int) -> str:
    """Name of a state's PUMS person file, as folktables expects it (2017 on: psam_p<code>.csv)."""
    if year >= 2017:
        return f"psam_p{_load_acs_module()._STATE_CODES[state]}.csv"
    return f"ss{str(year)[-2:]}p{state.lower()}.csv"  # 2014-2016 files


def pums_url(state: str, year: int, horizon: str) -> str:
    """The Census Bureau zip holding that file (the URL folktables downloads)."""
    return f"https://www2.census.gov/programs-surveys/acs/data/pums/{year}/{horizon}/csv_p{state.lower()}.zip"


def _mirror_hint(state: str, year: int, horizon: str, mirror: Any) -> str:
    folder = f"{mirror}/acs/{year}/{horizon}" if mirror else f"<mirror>/acs/{year}/{horizon}"
    hint = f"unzip {pums_filename(state, year)} from {pums_url(state, year, horizon)} into {folder}/"
    if not mirror:
        hint += " and set COLLECTIVE_FAIRNESS_MIRROR to <mirror> (or pass mirror=)"
    return hint


def _download(state: str, year: int, horizon: str, folder: Path) -> Path:
    """Fetch one state's file with folktables into ``folder`` (atomically: temp dir + rename)."""
    load_acs = _load_acs_module()
    filename, url = pums_filename(state, year), pums_url(state, year, horizon)
    target = folder / filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{filename}.", dir=folder))
    except OSError as exc:
        raise DataError(f"cannot write the ACS cache folder {folder} ({exc.strerror}); set "
                        "COLLECTIVE_FAIRNESS_DATA_HOME or data_home= to a writable folder") from None
    try:
        try:
            load_acs.download_and_extract(url, str(staging), url.rsplit("/", 1)[1], filename,
                                          delete_download=True)
        except Exception as exc:  # requests errors, an HTML error page that is no zip, a zip without the file
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(
                f"could not download the ACS PUMS file {filename} ({state}, {year} {horizon}) from {url} "
                f"({type(exc).__name__}: {reason}) and it is not in the cache {folder}; offline: "
                f"{_mirror_hint(state, year, horizon, None)}"
            ) from None
        os.replace(staging / filename, target)  # readers never see half a file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _locate(state: str, year: int, horizon: str, home: Path, mirror: Path | None) -> tuple[Path, Path]:
    """(root folder for folktables, file path): cache, else mirror (no network), else download."""
    filename = pums_filename(state, year)
    cache_root = home / "acs"
    cached = cache_root / str(year) / horizon / filename
    if cached.is_file():
        return cache_root, cached
    if mirror is not None:
        mirror_root = mirror / "acs"
        path = mirror_root / str(year) / horizon / filename
        if not path.is_file():
            raise DataError(
                f"ACS PUMS file {filename} ({state}, {year} {horizon}, person) not found: looked in the cache "
                f"{cached.parent} and the mirror {path.parent} (from mirror= or $COLLECTIVE_FAIRNESS_MIRROR); "
                f"{_mirror_hint(state, year, horizon, mirror)}"
            )
        return mirror_root, path
    return cache_root, _download(state, year, horizon, cached.parent)


# --------------------------------------------------------------------------- options


def _fail(option: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"option {option}={value!r} is not allowed for dataset {ACS_NAME!r}; allowed: {allowed}")


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _states(value: Any) -> tuple[str, ...]:
    codes = _folktables().state_list
    allowed = f"a state code or a list of them: {', '.join(codes)}"
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or isinstance(items, (dict, bytes)):
        _fail("states", value, allowed)
    items = list(items)
    if not items or not all(isinstance(s, str) for s in items):
        _fail("states", value, allowed)
    states = tuple(s.strip().upper() for s in items)
    unknown = [s for s in states if s not in codes]
    if unknown:
        _fail("states", value, allowed)
    if len(set(states)) != len(states):
        _fail("states", value, "distinct state codes")
    return states


def _options(states: Any, year: Any, horizon: Any, survey: Any, n: Any, random_state: Any) -> dict:
    out = {"states": _states(states)}
    if not _integer(year) or year < FIRST_YEAR:
        _fail("year", year, f"a survey year (an integer >= {FIRST_YEAR}) for which the Census Bureau publishes PUMS files")
    out["year"] = int(year)
    if horizon not in HORIZONS:
        _fail("horizon", horizon, " or ".join(HORIZONS))
    out["horizon"] = horizon
    if survey != "person":
        _fail("survey", survey, "'person' (ACSIncome is defined on person records)")
    if n is not None and (not _integer(n) or n < 1):
        _fail("n", n, "an integer >= 1 (rows drawn after the filter), or leave it out for every row")
    out["n"] = None if n is None else int(n)
    if isinstance(random_state, (np.random.Generator, np.random.SeedSequence)):
        out["rng"] = np.random.default_rng(random_state)
    elif _integer(random_state) and random_state >= 0:
        out["rng"] = np.random.default_rng(int(random_state))
    else:
        _fail("random_state", random_state, "a non-negative int, numpy SeedSequence or numpy Generator")
    return out


# --------------------------------------------------------------------------- loading


def _read_state(root: Path, path: Path, state: str, year: int, horizon: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One state's ACSIncome features (sensitive columns still in) and labels, via folktables."""
    folktables = _folktables()
    source = folktables.ACSDataSource(survey_year=str(year), horizon=horizon, survey="person", root_dir=str(root))
    saved = random.getstate()  # folktables' loader reseeds Python's global random module
    try:
        raw = source.get_data(states=[state], download=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, StopIteration) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot parse ACS PUMS file {path}: {reason}; allowed: a PUMS person CSV "
                        f"(from {pums_url(state, year, horizon)})") from None
    except OSError as exc:
        raise DataError(f"cannot read ACS PUMS file {path} ({exc.strerror or exc}); allowed: a readable "
                        "PUMS person CSV") from None
    finally:
        random.setstate(saved)
    problem = folktables.ACSIncome
    needed = list(dict.fromkeys([*problem.features, problem.target, *_FILTER_COLUMNS]))
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise DataError(f"ACS PUMS file {path} lacks column(s) {', '.join(missing)}; allowed: a PUMS person "
                        f"CSV with {', '.join(needed)} (from {pums_url(state, year, horizon)})")
    features, target, _ = problem.df_to_pandas(raw[needed])
    return features, target.to_numpy().ravel().astype(np.int8)


@functools.lru_cache(maxsize=2)
def _income_frame(files: tuple, year: int, horizon: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Every state's rows, concatenated in the order asked; keyed by the files' stat signatures
    (a rewritten file is read again). Callers must not mutate the result."""
    parts = [_read_state(Path(root), Path(path), state, year, horizon) for state, root, path, *_ in files]
    features = pd.concat([f for f, _ in parts], ignore_index=True)
    y = np.concatenate([y for _, y in parts])
    return features, y


def load_acs_income(sensitive: str, data_home: str | os.PathLike, mirror: str | os.PathLike | None, *,
                    states: Any = DEFAULTS["states"], year: Any = DEFAULTS["year"],
                    horizon: Any = DEFAULTS["horizon"], survey: Any = DEFAULTS["survey"],
                    n: Any = DEFAULTS["n"], random_state: Any = DEFAULTS["random_state"]) -> dict[str, Any]:
    """folktables' ACSIncome for ``states`` / ``year`` / ``horizon``: the keyword arguments of a
    :class:`simulations.datasets.Dataset`.

    ``data_home`` is the cache folder and ``mirror`` the mirror folder or ``None`` (both already
    resolved from the environment by ``load_dataset``).

    ``sensitive="sex"`` (a = 1 for female, SEX == 2) or ``"race"`` (a = 1 for every RAC1P
    other than 1, "White alone"); the chosen column is dropped from the features, the other
    one stays a (categorical) feature. ``n`` rows are drawn without replacement after the
    filter with ``numpy.random.default_rng(random_state)`` (kept in file order); default all.
    """
    if sensitive not in ACS_SENSITIVE:
        raise ConfigError(f"sensitive={sensitive!r} is not available for dataset {ACS_NAME!r}; "
                          f"allowed: {', '.join(ACS_SENSITIVE)}")
    opts = _options(states, year, horizon, survey, n, random_state)
    year, horizon = opts["year"], opts["horizon"]
    home = Path(data_home).expanduser()
    mirror = Path(mirror).expanduser() if mirror not in (None, "") else None
    files = []
    for state in opts["states"]:
        root, path = _locate(state, year, horizon, home, mirror)
        st = path.stat()
        files.append((state, str(root), str(path), st.st_size, st.st_mtime_ns))
    frame, labels = _income_frame(tuple(files), year, horizon)

    where = f"{', '.join(opts['states'])} {year} {horizon}"
    if len(frame) == 0:
        raise DataError(f"{ACS_NAME} ({where}): no rows are left after folktables' adult_filter; allowed: "
                        "PUMS person files with employed adults (AGEP > 16, WKHP > 0, PINCP > 100)")
    rows = np.arange(len(frame))
    if opts["n"] is not None:
        if opts["n"] > len(frame):
            raise DataError(f"{ACS_NAME} ({where}): option n={opts['n']} asks for more rows than the "
                            f"{len(frame)} left after the filter; allowed: n <= {len(frame)}, or leave n out")
        rows = np.sort(opts["rng"].choice(len(frame), size=opts["n"], replace=False))

    column = _COLUMN[sensitive]
    a = (frame[column].to_numpy() == 2) if sensitive == "sex" else (frame[column].to_numpy() != 1)
    features = frame.drop(columns=column).iloc[rows].reset_index(drop=True)
    categorical = tuple(c for c in features.columns if c not in _NUMERICAL)
    features = features.astype({c: np.int64 for c in categorical})  # codes, one-hot encoded by prepare
    sample = f"{opts['n']} rows drawn with random_state" if opts["n"] is not None else "all rows"
    return dict(
        name=ACS_NAME,
        features=features,
        a=a[rows].astype(np.int8),
        y=labels[rows],
        sensitive=sensitive,
        categorical=categorical,
        numerical=tuple(c for c in features.columns if c in _NUMERICAL),
        description=(
            f"ACS PUMS person records, {where} ({sample}), folktables ACSIncome: adult_filter (AGEP > 16, "
            f"PINCP > 100, WKHP > 0, PWGTP >= 1), y = PINCP > 50000; a = {_PROTECTED[sensitive]}"
        ),
        source=(
            f"US Census Bureau, American Community Survey PUMS {year} {horizon} ({', '.join(opts['states'])}), "
            "public data; task from folktables (Ding et al. 2021)"
        ),
    )

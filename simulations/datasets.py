"""Benchmark data sets and their train/test preparation.

``load_dataset(name, ...)`` returns a :class:`Dataset` (raw features, binary sensitive
attribute ``a`` with 1 = protected minority, binary label ``y`` with 1 = favourable);
``prepare(dataset, random_state=...)`` splits it (stratified by ``(a, y)``) and fits the
preprocessing on the training rows only, giving a :class:`Prepared` of dense arrays.

Where the files come from (see ``docs/datasets.md``):

* ``adult`` is bundled (gzip copies in ``simulations/data``), verified by SHA-256.
* ``compas`` and ``german`` are looked up in the cache folder (``data_home``), then in a
  local mirror folder (``mirror=`` / ``$COLLECTIVE_FAIRNESS_MIRROR``; never the network
  then), else downloaded from the canonical URL into the cache. Every copy is verified.
* ``synthetic`` / ``toy`` are drawn from a structural causal model that also yields the
  true counterfactuals ``x_{A<-0}`` and ``P(y=1 | x_{A<-0})``.
* ``csv`` reads a user's own file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import math
import numbers
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from agents.errors import ConfigError, DataError
from agents.validation import as_binary, is_number_text, stream_int

from .acs import ACS_NAME, ACS_OPTIONS, ACS_SENSITIVE, load_acs_income

__all__ = [
    "DATASETS",
    "Dataset",
    "Prepared",
    "RemoteFile",
    "REMOTE_FILES",
    "SYNTHETIC",
    "default_data_home",
    "fetch_file",
    "load_configured",
    "load_dataset",
    "make_scm",
    "prepare",
]

DATA_HOME_ENV = "COLLECTIVE_FAIRNESS_DATA_HOME"
MIRROR_ENV = "COLLECTIVE_FAIRNESS_MIRROR"

DATASETS = ("adult", "compas", "german", "synthetic", "toy", "csv", ACS_NAME, "synthetic-nonlinear")
# drawn from an SCM: known counterfactuals, one draw per seed (synthetic-nonlinear: simulations/synthetic.py)
SYNTHETIC = ("synthetic", "toy", "synthetic-nonlinear")


# --------------------------------------------------------------------------- containers


def _frozen_int8(values: Any, what: str) -> np.ndarray:
    arr = np.array(as_binary(values, what), dtype=np.int8)  # always a private copy
    arr.setflags(write=False)
    return arr


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Dataset:
    """A binary-label data set with one binary sensitive attribute.

    ``features`` holds the raw feature columns (neither label nor sensitive column);
    ``a`` is 1 for the protected minority and ``y`` is 1 for the favourable outcome
    (both read-only int8). Synthetic data also carry the counterfactual features
    ``x_{A<-0}`` (same columns) and ``P(y=1 | x_{A<-0})``; both are ``None`` otherwise.
    """

    name: str
    features: pd.DataFrame = field(repr=False)
    a: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    sensitive: str
    categorical: tuple[str, ...]
    numerical: tuple[str, ...]
    counterfactual_features: pd.DataFrame | None = field(default=None, repr=False)
    counterfactual_proba: np.ndarray | None = field(default=None, repr=False)
    description: str = field(default="", repr=False)
    source: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        n = len(self.features)
        set_ = functools.partial(object.__setattr__, self)
        set_("a", _frozen_int8(self.a, f"{self.name}: sensitive attribute a"))
        set_("y", _frozen_int8(self.y, f"{self.name}: label y"))
        set_("categorical", tuple(self.categorical))
        set_("numerical", tuple(self.numerical))
        if len(self.a) != n or len(self.y) != n:
            raise DataError(f"{self.name}: features, a and y must have the same number of rows")
        columns = list(self.features.columns)
        if sorted(self.categorical + self.numerical) != sorted(columns) or len(columns) != len(
            set(columns)
        ):
            raise DataError(
                f"{self.name}: categorical + numerical must list each feature column exactly once"
            )
        if (self.counterfactual_features is None) != (self.counterfactual_proba is None):
            raise DataError(f"{self.name}: give both counterfactual features and probabilities")
        if self.counterfactual_features is not None:
            if list(self.counterfactual_features.columns) != columns or len(
                self.counterfactual_features
            ) != n:
                raise DataError(f"{self.name}: counterfactual features must match the features")
            proba = np.array(self.counterfactual_proba, dtype=np.float64)
            if proba.shape != (n,):
                raise DataError(f"{self.name}: counterfactual_proba must have one value per row")
            set_("counterfactual_proba", _frozen(proba))

    @property
    def n_samples(self) -> int:
        return len(self.features)

    @property
    def protected_rate(self) -> float:
        """Fraction of rows in the protected group (a = 1)."""
        return float(self.a.mean())

    @property
    def favourable_rate(self) -> float:
        """Fraction of rows with the favourable label (y = 1)."""
        return float(self.y.mean())

    @property
    def has_counterfactual(self) -> bool:
        return self.counterfactual_features is not None


@dataclass(frozen=True, eq=False)
class Prepared:
    """A stratified train/test split with preprocessing fitted on the training rows.

    Arrays are read-only: copy before changing labels (``y = prepared.y_train.copy()``).
    ``train_index``/``test_index`` are row positions in ``dataset``. The ``*_cf`` fields
    (counterfactual features ``x_{A<-0}``, preprocessed with the same fitted transformer and
    with ``a = 0`` when the sensitive column is included) exist only on synthetic data.
    """

    dataset: Dataset = field(repr=False)
    X_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    a_train: np.ndarray = field(repr=False)
    a_test: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    feature_names: tuple[str, ...] = field(repr=False)
    preprocessor: ColumnTransformer = field(repr=False)
    train_index: np.ndarray = field(repr=False)
    test_index: np.ndarray = field(repr=False)
    include_sensitive: bool = False
    X_train_cf: np.ndarray | None = field(default=None, repr=False)
    X_test_cf: np.ndarray | None = field(default=None, repr=False)
    cf_proba_train: np.ndarray | None = field(default=None, repr=False)
    cf_proba_test: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"Prepared(dataset={self.dataset.name!r}, X_train={self.X_train.shape}, "
            f"X_test={self.X_test.shape}, include_sensitive={self.include_sensitive})"
        )

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def has_counterfactual(self) -> bool:
        return self.X_test_cf is not None


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable original file and the SHA-256 its bytes must have."""

    filename: str
    url: str
    sha256: str


REMOTE_FILES: dict[str, RemoteFile] = {
    remote.filename: remote
    for remote in (
        RemoteFile(
            "compas-scores-two-years.csv",
            "https://raw.githubusercontent.com/propublica/compas-analysis/"
            "bafff5da3f2e45eca6c2d5055faad269defd135a/compas-scores-two-years.csv",
            "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
        ),
        RemoteFile(
            "german.data",
            "https://archive.ics.uci.edu/ml/machine-learning-databases/statlog/german/german.data",
            "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871",
        ),
    )
}

_BUNDLED_SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}


def default_data_home() -> Path:
    """Cache folder: ``$COLLECTIVE_FAIRNESS_DATA_HOME``, else ``~/.cache/collective-fairness``."""
    if os.environ.get(DATA_HOME_ENV):
        return Path(os.environ[DATA_HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "collective-fairness"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signature(path: Path) -> tuple[str, int, int]:
    """Key for in-process caches: a rewritten file gets a new key and is re-verified."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path).read_bytes())


def _fix_hint(remote: RemoteFile) -> str:
    return (
        f"download {remote.url} (sha256 {remote.sha256}) into a folder and set "
        f"{MIRROR_ENV} to that folder (or pass mirror=)"
    )


def fetch_file(
    remote: RemoteFile, *, data_home: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
) -> Path:
    """Return the path of a verified local copy of ``remote``.

    Order: the cache folder, then the mirror folder if one is configured (the network is
    then never used), else a download from ``remote.url`` into the cache folder.
    """
    home = Path(data_home).expanduser() if data_home else default_data_home()
    mirror = mirror if mirror not in (None, "") else os.environ.get(MIRROR_ENV) or None

    cached = home / remote.filename
    if cached.is_file() and _file_sha256(*_signature(cached)) == remote.sha256:
        return cached  # a corrupt cached copy is simply replaced below

    if mirror is not None:
        path = Path(mirror).expanduser() / remote.filename
        if not path.is_file():
            raise DataError(
                f"{remote.filename} not found in mirror folder {path.parent} "
                f"(from mirror= or ${MIRROR_ENV}); {_fix_hint(remote)}"
            )
        got = _file_sha256(*_signature(path))
        if got != remote.sha256:
            raise DataError(
                f"{path} has sha256 {got}, expected {remote.sha256}; "
                f"replace it with the original from {remote.url}"
            )
        return path

    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response:
            data = response.read()
    except (OSError, ValueError) as exc:  # URLError, timeouts, bad URLs
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download {remote.filename} from {remote.url} ({reason}) and it is not "
            f"in the cache {home}; offline: {_fix_hint(remote)}"
        ) from None
    got = _sha256(data)
    if got != remote.sha256:
        raise DataError(
            f"download of {remote.filename} from {remote.url} has sha256 {got}, expected "
            f"{remote.sha256}; nothing was cached. {_fix_hint(remote).capitalize()}"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
        partial = home / f"{remote.filename}.{os.getpid()}.part"
        partial.write_bytes(data)
        os.replace(partial, cached)  # atomic: readers never see half a file
    except OSError as exc:
        raise DataError(
            f"cannot write {cached} ({exc.strerror}); set {DATA_HOME_ENV} or data_home= "
            "to a writable folder"
        ) from None
    return cached


# --------------------------------------------------------------------------- parsers

_ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
)

# Statlog German credit, attributes 1-20 in file order (see german.doc); label last.
_GERMAN_COLUMNS = (
    "checking_status", "duration_months", "credit_history", "purpose", "credit_amount",
    "savings", "employment_since", "installment_rate", "personal_status_sex",
    "other_debtors", "residence_since", "property", "age", "other_installment_plans",
    "housing", "existing_credits", "job", "people_liable", "telephone", "foreign_worker",
    "credit",
)
_GERMAN_NUMERICAL = (
    "duration_months", "credit_amount", "installment_rate", "residence_since", "age",
    "existing_credits", "people_liable",
)


def _bundled_bytes(filename: str) -> bytes:
    resource = importlib.resources.files("simulations").joinpath("data", filename + ".gz")
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as exc:
        raise DataError(
            f"bundled file simulations/data/{filename}.gz is missing or unreadable ({exc}); "
            "reinstall collective-fairness"
        ) from None
    got, expected = _sha256(data), _BUNDLED_SHA256[filename]
    if got != expected:
        raise DataError(
            f"bundled {filename} has sha256 {got}, expected {expected}; "
            "reinstall collective-fairness"
        )
    return data


@functools.lru_cache(maxsize=1)
def _adult_frame() -> pd.DataFrame:
    def read(filename: str, skiprows: int) -> pd.DataFrame:
        return pd.read_csv(
            BytesIO(_bundled_bytes(filename)), header=None, names=_ADULT_COLUMNS,
            skipinitialspace=True, na_values=["?"], keep_default_na=False, skiprows=skiprows,
        )

    # adult.test starts with a "|1x3 Cross validator" line and writes labels as ">50K."
    frame = pd.concat([read("adult.data", 0), read("adult.test", 1)], ignore_index=True)
    frame = frame.dropna().reset_index(drop=True)
    frame["income"] = frame["income"].str.rstrip(".")
    return frame.drop(columns="fnlwgt")


@functools.lru_cache(maxsize=8)
def _read_table(kind: str, path: str, size: int, mtime_ns: int) -> pd.DataFrame:
    """Parse a file once per process (keyed by its stat signature); callers must not mutate."""
    if kind == "german":
        return pd.read_csv(path, sep=" ", header=None, names=_GERMAN_COLUMNS)
    if kind == "csv-header":  # the names as written: read_csv renames a repeated "y" to "y.1"
        return pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return pd.read_csv(path)  # compas, csv


# --------------------------------------------------------------------------- loaders


def _load_adult(sensitive: str, **_: Any) -> Dataset:
    frame = _adult_frame()
    if sensitive == "sex":
        a = frame["sex"] == "Female"
    else:
        a = frame["race"] != "White"
    features = frame.drop(columns=["income", sensitive])
    categorical = tuple(c for c in features.columns if not is_numeric_dtype(features[c]))
    numerical = tuple(c for c in features.columns if c not in categorical)
    return Dataset(
        name="adult",
        features=features,
        a=a.to_numpy(np.int8),
        y=(frame["income"] == ">50K").to_numpy(np.int8),
        sensitive=sensitive,
        categorical=categorical,
        numerical=numerical,
        description=(
            "UCI Adult census income (adult.data + adult.test, rows with '?' dropped, fnlwgt "
            f"dropped); y = income >50K; a = {'female' if sensitive == 'sex' else 'non-White'}"
        ),
        source="Becker & Kohavi (1996), UCI ML Repository, doi:10.24432/C5XW20, CC BY 4.0",
    )


def _load_compas(sensitive: str, data_home: Any, mirror: Any, **_: Any) -> Dataset:
    remote = REMOTE_FILES["compas-scores-two-years.csv"]
    raw = _read_table("compas", *_signature(fetch_file(remote, data_home=data_home, mirror=mirror)))
    # ProPublica's filter. A missing days_b_screening_arrest fails the test (as in their R
    # code), and pandas reads score_text 'N/A' as NaN.
    keep = (
        (raw["days_b_screening_arrest"].abs() <= 30)
        & (raw["is_recid"] != -1)
        & (raw["c_charge_degree"] != "O")
        & raw["score_text"].notna()
        & raw["race"].isin(["African-American", "Caucasian"])
    )
    frame = raw.loc[keep].reset_index(drop=True)
    categorical = ("sex", "age_cat", "c_charge_degree")
    numerical = ("age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count")
    return Dataset(
        name="compas",
        features=frame[["sex", "age", "age_cat", "juv_fel_count", "juv_misd_count",
                        "juv_other_count", "priors_count", "c_charge_degree"]],
        a=(frame["race"] == "African-American").to_numpy(np.int8),
        y=(1 - frame["two_year_recid"]).to_numpy(np.int8),
        sensitive=sensitive,
        categorical=categorical,
        numerical=numerical,
        description=(
            "ProPublica COMPAS two-year recidivism, standard filter, African-American (a=1) and "
            "Caucasian (a=0) defendants; y = 1 - two_year_recid (no recidivism is favourable)"
        ),
        source="ProPublica compas-analysis (Angwin et al. 2016), downloaded on demand",
    )


def _load_german(sensitive: str, data_home: Any, mirror: Any, **_: Any) -> Dataset:
    path = fetch_file(REMOTE_FILES["german.data"], data_home=data_home, mirror=mirror)
    frame = _read_table("german", *_signature(path))
    # Attribute 9 mixes sex and marital status; it is dropped whole so it cannot leak sex.
    features = frame.drop(columns=["personal_status_sex", "credit"])
    return Dataset(
        name="german",
        features=features,
        a=frame["personal_status_sex"].isin(["A92", "A95"]).to_numpy(np.int8),
        y=(frame["credit"] == 1).to_numpy(np.int8),
        sensitive=sensitive,
        categorical=tuple(c for c in features.columns if c not in _GERMAN_NUMERICAL),
        numerical=_GERMAN_NUMERICAL,
        description=(
            "Statlog German credit; y = good credit; a = female (attribute 9 is A92 or A95; "
            "the attribute itself is not a feature)"
        ),
        source="Hofmann (1994), UCI ML Repository, doi:10.24432/C5NC77, CC BY 4.0",
    )


def _load_acs_income(sensitive: str, data_home: Any, mirror: Any, **options: Any) -> Dataset:
    """ACS-Income: PUMS files and the folktables task are in ``simulations/acs.py``."""
    home = Path(data_home).expanduser() if data_home else default_data_home()
    mirror = mirror if mirror not in (None, "") else os.environ.get(MIRROR_ENV) or None
    return Dataset(**load_acs_income(sensitive, home, mirror, **options))


# Fixed SCM constants: label weights w = _SIGNAL * 1/sqrt(d) (so w.U ~ N(0, _SIGNAL^2)),
# intercept c, and the feature-shift direction v = e_1. Fixed so that every random_state
# samples from the same population.
_SIGNAL = 2.0
_INTERCEPT = 0.0
# Sizes a drawn data set may have: beyond these numpy fails or the machine runs out of memory.
_MAX_ROWS = 100_000_000
_MAX_FEATURES = 10_000
_MAX_VALUES = 1_000_000_000
_MAX_FEATURE = 1e100  # numerical feature values: their squares, summed over rows, must stay finite


def _number(name: str, value: Any, expected: str, *, integer: bool = False,
            ok: Callable[[float], bool] = lambda v: True) -> Any:
    """Validate one numeric option (bools and NaN/inf are rejected)."""
    kind = numbers.Integral if integer else numbers.Real
    valid = (not isinstance(value, bool) and isinstance(value, kind)
             and math.isfinite(value) and ok(value))
    if not valid:
        raise ConfigError(f"option {name}={value!r} is not allowed; allowed: {expected}")
    return int(value) if integer else float(value)


def _as_generator(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.SeedSequence) or (
        isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
        and random_state >= 0
    ):
        return np.random.default_rng(random_state)
    raise ConfigError(
        f"random_state={random_state!r} is not allowed; allowed: a non-negative int, "
        "numpy SeedSequence or numpy Generator"
    )


def make_scm(
    *, n: int, n_features: int, minority_fraction: float, feature_shift: float,
    label_bias: float, random_state: Any, name: str = "synthetic",
) -> Dataset:
    """Draw ``n`` rows from the biased structural causal model.

    ``A ~ Bern(minority_fraction)``, ``U ~ N(0, I_d)``, ``X = U - A * feature_shift * e_1``,
    ``Y ~ Bern(sigmoid(w.U + c - label_bias * A))`` with ``w = 2/sqrt(d) * 1`` and ``c = 0``.
    Hence ``x_{A<-0} = U`` and ``P(y=1 | x_{A<-0}) = sigmoid(w.U + c)`` exactly.
    """
    n = _number("n", n, f"an integer from 10 to {_MAX_ROWS:_}", integer=True, ok=lambda v: 10 <= v <= _MAX_ROWS)
    d = _number("n_features", n_features, f"an integer from 1 to {_MAX_FEATURES}", integer=True,
                ok=lambda v: 1 <= v <= _MAX_FEATURES)
    if n * d > _MAX_VALUES:
        raise ConfigError(f"options n={n} and n_features={d} ask for {n * d:_} feature values; allowed: "
                          f"n * n_features <= {_MAX_VALUES:_} (8 GB of float64)")
    pi = _number("minority_fraction", minority_fraction, "a number strictly between 0 and 1",
                 ok=lambda v: 0 < v < 1)
    shift = _number("feature_shift", feature_shift, "a finite number")
    bias = _number("label_bias", label_bias, "a finite number")
    rng = _as_generator(random_state)

    # Draw order (A, U, Y) is part of the reproducibility contract: do not reorder.
    a = (rng.random(n) < pi).astype(np.int8)
    u = rng.standard_normal((n, d))
    w = np.full(d, _SIGNAL / math.sqrt(d))
    logit_cf = u @ w + _INTERCEPT
    y = (rng.random(n) < expit(logit_cf - bias * a)).astype(np.int8)
    x = u.copy()
    x[:, 0] -= shift * a  # exact: rows with a = 0 keep x == u bit for bit

    columns = [f"x{j + 1}" for j in range(d)]
    return Dataset(
        name=name,
        features=pd.DataFrame(x, columns=columns),
        a=a,
        y=y,
        sensitive="a",
        categorical=(),
        numerical=tuple(columns),
        counterfactual_features=pd.DataFrame(u, columns=columns),
        counterfactual_proba=expit(logit_cf),
        description=(
            f"Synthetic SCM: n={n}, d={d}, minority_fraction={pi}, feature_shift={shift}, "
            f"label_bias={bias}; X = U - A*shift*e1, Y ~ Bern(sigmoid({_SIGNAL}/sqrt(d)*sum(U) "
            f"- label_bias*A))"
        ),
        source="generated by collective-fairness (simulations.datasets.make_scm)",
    )


def _load_synthetic(n: int = 20_000, n_features: int = 5, minority_fraction: float = 0.3,
                    feature_shift: float = 1.0, label_bias: float = 1.5, random_state: Any = 0,
                    **_: Any) -> Dataset:
    return make_scm(n=n, n_features=n_features, minority_fraction=minority_fraction,
                    feature_shift=feature_shift, label_bias=label_bias,
                    random_state=random_state)


def _load_toy(n: int = 2_000, minority_fraction: float = 0.3, feature_shift: float = 1.0,
              label_bias: float = 1.5, random_state: Any = 0, **_: Any) -> Dataset:
    return make_scm(n=n, n_features=2, minority_fraction=minority_fraction,
                    feature_shift=feature_shift, label_bias=label_bias,
                    random_state=random_state, name="toy")


def _value_mask(column: pd.Series, value: Any, option: str) -> np.ndarray:
    """Rows equal to ``value``; falls back to text comparison (TOML gives "1" for 1)."""
    mask = (column == value).to_numpy(bool)
    if not mask.any():
        mask = (column.astype(str) == str(value)).to_numpy(bool)
    if not mask.any():
        present = sorted(map(str, column.unique()))
        shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
        raise DataError(
            f"{option}={value!r} does not occur in column {column.name!r}; values: {shown}; "
            f"allowed: one of these values, and the column must hold two"
        )
    if mask.all():
        raise DataError(
            f"every row of column {column.name!r} equals {option}={value!r}; "
            "allowed: a column in which both classes occur"
        )
    return mask


def _check_binary(column: pd.Series, option: str, value_option: str, value: Any, file: str) -> None:
    """y = (label == favourable) and a = (sensitive == protected) need two-valued columns.

    With three or more values the comparison would silently lump every other class
    together, so that is refused rather than guessed; with one there is nothing to compare.
    """
    values = column.unique()
    if len(values) == 2:
        return
    present = sorted(map(str, values))
    shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
    if len(values) < 2:
        raise DataError(
            f"{option} column {column.name!r} of {file} holds a single value ({shown}); "
            f"allowed: exactly two values, one of them {value_option}={value!r}"
        )
    raise DataError(
        f"{option} column {column.name!r} of {file} has {len(present)} distinct values ({shown}); "
        f"allowed: exactly two values, one of them {value_option}={value!r}; "
        "recode the column to two classes first"
    )


def _csv_option(name: str, value: Any, kind: str) -> None:
    """Types of the csv options, checked before any is used (TOML may give a table or a list)."""
    if kind == "name":
        ok, allowed = isinstance(value, str) and value != "", "a non-empty string"
    elif kind == "names":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        allowed = "a list of column names"
    elif kind == "value":  # compared with a column's values
        ok = (isinstance(value, (str, bool)) or isinstance(value, numbers.Integral)
              or (isinstance(value, numbers.Real) and math.isfinite(value)))
        allowed = "a string, an integer or a finite number (a value of the column)"
    else:  # path
        ok, allowed = isinstance(value, (str, os.PathLike)) and str(value) != "", "a path to a CSV file"
    if not ok:
        raise ConfigError(f"option {name}={value!r} is not allowed; allowed: {allowed}")


def _load_csv(sensitive: str | None, path: Any = None, label: Any = None, favourable: Any = None,
              protected: Any = None, categorical: Iterable[str] | None = None,
              features: Iterable[str] | None = None, name: str | None = None,
              **_: Any) -> Dataset:
    required = {"path": path, "label": label, "sensitive": sensitive,
                "favourable": favourable, "protected": protected}
    missing = [k for k, v in required.items() if v is None]
    if missing:
        raise ConfigError(
            f"dataset 'csv' needs option(s) {', '.join(missing)}; required: path, label, "
            "sensitive, favourable, protected (optional: categorical, features, name)"
        )
    for option, value, kind in (("path", path, "path"), ("label", label, "name"), ("sensitive", sensitive, "name"),
                                ("favourable", favourable, "value"), ("protected", protected, "value"),
                                ("categorical", categorical, "names"), ("features", features, "names"),
                                ("name", name, "name")):
        if value is not None or option in required:
            _csv_option(option, value, kind)
    file = Path(path).expanduser()
    allowed = "allowed: a UTF-8 CSV file with a header row and data rows"
    if not file.exists():
        raise DataError(f"csv file {str(file)!r} does not exist; allowed: path= an existing CSV file")
    if not file.is_file():
        raise DataError(f"csv file {str(file)!r} is not a regular file (a directory or a device); {allowed}")
    try:
        frame = _read_table("csv", *_signature(file))
        header = _read_table("csv-header", *_signature(file))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first_line = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot parse csv file {str(file)!r}: {first_line}; {allowed}") from None
    except OSError as exc:
        raise DataError(f"cannot read csv file {str(file)!r} ({exc.strerror}); {allowed}") from None

    names = [str(c) for c in header.iloc[0]] if len(header) else []
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(
            f"column name(s) {', '.join(map(repr, repeated))} occur more than once in the header of {file.name}; "
            "allowed: distinct column names"
        )
    if frame.empty:
        raise DataError(f"{file.name} has a header but no data rows; {allowed}")
    columns = list(map(str, frame.columns))
    for option, column in (("label", label), ("sensitive", sensitive)):
        if column not in frame.columns:
            raise DataError(
                f"{option} column {column!r} is not in {file.name}; allowed: one of {', '.join(columns)}"
            )
    if label == sensitive:
        raise DataError(f"label and sensitive must be different columns (both {label!r}); "
                        "allowed: two different columns")
    if features is None:
        feature_cols = [c for c in frame.columns if c not in (label, sensitive)]
    else:
        feature_cols = list(features)
        bad = [c for c in feature_cols if c not in frame.columns or c in (label, sensitive)]
        if bad:
            raise DataError(
                f"feature column(s) {', '.join(map(repr, bad))} not usable; allowed: "
                + ", ".join(c for c in columns if c not in (label, sensitive))
            )
    if not feature_cols:
        raise DataError(f"{file.name} has no feature columns besides {label!r} and {sensitive!r}; "
                        "allowed: a file with at least one more column")

    used = [label, sensitive, *feature_cols]
    nan_cols = [c for c in used if frame[c].isna().any()]
    if nan_cols:
        rows = int(frame[nan_cols].isna().any(axis=1).sum())
        raise DataError(
            f"column(s) {', '.join(map(repr, nan_cols))} of {file.name} have missing values "
            f"({rows} rows); allowed: complete columns (drop or impute the missing values first)"
        )
    for option, column, value_option, value in (("label", label, "favourable", favourable),
                                                ("sensitive", sensitive, "protected", protected)):
        _check_binary(frame[column], option, value_option, value, file.name)
    y = _value_mask(frame[label], favourable, "favourable")
    a = _value_mask(frame[sensitive], protected, "protected")

    if categorical is None:
        cat = tuple(c for c in feature_cols if not is_numeric_dtype(frame[c]))
    else:
        cat = tuple(categorical)
        unknown = [c for c in cat if c not in feature_cols]
        if unknown:
            raise DataError(
                f"categorical column(s) {', '.join(map(repr, unknown))} are not feature columns; "
                f"allowed: {', '.join(map(str, feature_cols))}"
            )
        text = [c for c in feature_cols if c not in cat and not is_numeric_dtype(frame[c])]
        if text:
            raise DataError(
                f"column(s) {', '.join(map(repr, text))} are not numeric; allowed: numeric columns, or list "
                "them in categorical (add them to categorical)"
            )
    for c in feature_cols:
        values = frame[c]
        if c in cat:
            if categorical is None:  # guessed from the text: a number column with a stray word is a typo
                texts = values.astype(str)
                numeric = texts.map(is_number_text)
                if numeric.any() and not numeric.all():
                    row = int(np.flatnonzero(~numeric.to_numpy())[0])
                    raise DataError(
                        f"column {c!r} of {file.name} mixes numbers and text (data row {row + 1}: {texts.iloc[row]!r}); "
                        "allowed: numbers only, or list the column in categorical to treat every value as a category"
                    )
        elif not np.isfinite(values.to_numpy(np.float64)).all():
            row = int(np.flatnonzero(~np.isfinite(values.to_numpy(np.float64)))[0])
            raise DataError(
                f"column {c!r} of {file.name} has a non-finite value (data row {row + 1}: {values.iloc[row]}); "
                "allowed: finite numbers"
            )
    return Dataset(
        name=name or file.stem,
        features=frame[feature_cols],
        a=a.astype(np.int8),
        y=y.astype(np.int8),
        sensitive=str(sensitive),
        categorical=cat,
        numerical=tuple(c for c in feature_cols if c not in cat),
        description=(
            f"user CSV {file.name}; y = ({label} == {favourable!r}); "
            f"a = ({sensitive} == {protected!r})"
        ),
        source=str(file),
    )


@dataclass(frozen=True)
class _Spec:
    load: Callable[..., Dataset]
    options: tuple[str, ...]
    sensitive: tuple[str, ...] | None  # allowed values; None = a column name (csv)


_SCM_OPTIONS = ("n", "minority_fraction", "feature_shift", "label_bias", "random_state")
_SPECS: Mapping[str, _Spec] = {
    "adult": _Spec(_load_adult, (), ("sex", "race")),
    "compas": _Spec(_load_compas, (), ("race",)),
    "german": _Spec(_load_german, (), ("sex",)),
    ACS_NAME: _Spec(_load_acs_income, ACS_OPTIONS, ACS_SENSITIVE),  # simulations/acs.py
    "synthetic": _Spec(_load_synthetic, ("n_features", *_SCM_OPTIONS), ("a",)),
    "toy": _Spec(_load_toy, _SCM_OPTIONS, ("a",)),
    # simulations/synthetic.py, imported on use (it imports this module)
    "synthetic-nonlinear": _Spec(
        lambda **options: importlib.import_module(".synthetic", __package__).load_nonlinear(**options),
        ("n", "n_features", "minority_fraction", "feature_shift", "feature_scale", "interaction",
         "saturation", "label_bias", "bias_slope", "random_state"), ("a",)),
    "csv": _Spec(_load_csv, ("path", "label", "favourable", "protected", "categorical",
                             "features", "name"), None),
}


def load_dataset(
    name: str, /, *, sensitive: str | None = None, data_home: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None, **options: Any,
) -> Dataset:
    """Load a data set by name: adult, compas, german, synthetic, toy or csv.

    ``sensitive`` picks the protected attribute (adult: "sex" (default, female = 1) or
    "race" (non-White = 1); compas: "race"; german: "sex"; csv: the column name).
    ``data_home``/``mirror`` locate downloaded files (defaults from
    ``$COLLECTIVE_FAIRNESS_DATA_HOME`` and ``$COLLECTIVE_FAIRNESS_MIRROR``). Other keyword
    options are data-set specific (see ``docs/datasets.md``).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _SPECS:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    spec = _SPECS[key]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for dataset {key!r}; allowed: {allowed}"
        )
    if spec.sensitive is not None:
        sensitive = spec.sensitive[0] if sensitive is None else sensitive
        if sensitive not in spec.sensitive:
            raise ConfigError(
                f"sensitive={sensitive!r} is not available for dataset {key!r}; "
                f"allowed: {', '.join(spec.sensitive)}"
            )
    if key in SYNTHETIC:
        return spec.load(**options)
    return spec.load(sensitive=sensitive, data_home=data_home, mirror=mirror, **options)


def load_configured(data, *, seed: int | None = None) -> Dataset:
    """The dataset a scenario's ``[data]`` section names (``dataset``, ``sensitive``,
    ``options``); synthetic ones are drawn from the run's ``seed`` unless the options fix
    ``random_state``."""
    options = dict(data.options)
    if data.dataset in SYNTHETIC:
        options.setdefault("random_state", 0 if seed is None else seed)
    return load_dataset(data.dataset, sensitive=data.sensitive, **options)


# --------------------------------------------------------------------------- preparation


def _rows(count: int) -> str:
    return "no rows" if count == 0 else "a single row" if count == 1 else f"{count} rows"


def _split_seed(random_state: Any) -> int:
    """sklearn wants an int seed; derive one from a Generator/SeedSequence deterministically."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**32))
    if isinstance(random_state, np.random.SeedSequence):
        return stream_int(random_state, bits=32)
    _as_generator(random_state)  # validates (raises ConfigError)
    return int(random_state) % 2**32


def _feature_names(transformer: ColumnTransformer) -> list[str]:
    try:
        return list(transformer.get_feature_names_out())
    except ValueError:  # short names collide (e.g. "a_b"="c" vs "a"="b_c"): keep prefixes
        transformer.set_params(verbose_feature_names_out=True)
        return list(transformer.get_feature_names_out())


def _dense(matrix: Any, extra: np.ndarray | None) -> np.ndarray:
    out = np.asarray(matrix, dtype=np.float64)
    if extra is not None:
        out = np.column_stack([out, extra.astype(np.float64)])
    return _frozen(np.ascontiguousarray(out))


def prepare(
    dataset: Dataset, *, test_size: float | int = 0.3, include_sensitive: bool = False,
    random_state: Any,
) -> Prepared:
    """Split ``dataset`` stratified by ``(a, y)`` and preprocess it.

    One-hot encoding (unknown test categories ignored) and standard scaling are fitted on
    the training rows only. With ``include_sensitive`` the 0/1 attribute ``a`` is appended
    as the last (unscaled) column, named ``dataset.sensitive``.
    """
    n = dataset.n_samples
    ok_size = (isinstance(test_size, numbers.Real) and not isinstance(test_size, bool)
               and (0 < test_size < 1 if not isinstance(test_size, numbers.Integral)
                    else 1 <= test_size <= n - 1))
    if not ok_size:
        raise ConfigError(
            f"test_size={test_size!r} is not allowed; allowed: a fraction in (0, 1) or a row "
            f"count between 1 and {n - 1}"
        )
    strata = 2 * dataset.a.astype(np.int64) + dataset.y
    counts = np.bincount(strata, minlength=4)
    # Both groups with both labels, in training and test rows: else the collective has no
    # candidates or the firm's per-group rates (TPR, FPR, EqOd) are undefined.
    if (counts < 2).any():
        cell = int(np.flatnonzero(counts < 2)[0])
        raise DataError(
            f"{dataset.name}: group (a={cell // 2}, y={cell % 2}) has {_rows(counts[cell])}; allowed: data with "
            "at least 2 rows in each of the four (a, y) groups (both groups with both labels)"
        )
    seed = _split_seed(random_state)
    try:
        train_index, test_index = train_test_split(
            np.arange(n), test_size=test_size, stratify=strata, random_state=seed, shuffle=True
        )
    except ValueError as exc:  # e.g. test set smaller than the number of strata
        raise DataError(
            f"{dataset.name}: cannot split with test_size={test_size!r}: {' '.join(str(exc).split())}; allowed: "
            "a test_size that leaves at least one row of each (a, y) group in both parts"
        ) from None
    for part, rows in (("training", train_index), ("test", test_index)):
        missing = np.flatnonzero(np.bincount(strata[rows], minlength=4) == 0)
        if missing.size:
            cell = int(missing[0])
            raise DataError(
                f"{dataset.name}: test_size={test_size!r} leaves the {part} rows without group "
                f"(a={cell // 2}, y={cell % 2}) ({counts[cell]} rows in all); allowed: a test_size that leaves "
                "at least one row of each (a, y) group in both parts"
            )

    for column in dataset.numerical:  # standardising squares them: beyond this float64 overflows to inf/NaN
        values = dataset.features[column].to_numpy(np.float64)
        if not (np.abs(values) <= _MAX_FEATURE).all():
            raise DataError(
                f"{dataset.name}: feature {column!r} has a value of magnitude {np.nanmax(np.abs(values)):.3g} (or a "
                f"non-finite one); allowed: finite numbers of magnitude <= {_MAX_FEATURE:.0e}"
            )
    parts = []
    if dataset.categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
        parts.append(("categorical", encoder, list(dataset.categorical)))
    if dataset.numerical:
        parts.append(("numerical", StandardScaler(), list(dataset.numerical)))
    transformer = ColumnTransformer(parts, sparse_threshold=0.0, verbose_feature_names_out=False)
    a_train, a_test = dataset.a[train_index], dataset.a[test_index]
    extra = (lambda a: a) if include_sensitive else (lambda a: None)
    # Fitted on the training rows only: test statistics must not leak into the scaler.
    X_train = _dense(transformer.fit_transform(dataset.features.iloc[train_index]), extra(a_train))
    names = _feature_names(transformer)

    def transform(frame: pd.DataFrame, rows: np.ndarray, a: np.ndarray) -> np.ndarray:
        return _dense(transformer.transform(frame.iloc[rows]), extra(a))

    cf: dict[str, np.ndarray] = {}
    if dataset.has_counterfactual:
        zeros = np.zeros(n, dtype=np.int8)  # x_{A<-0}: the appended a column is 0 as well
        cf_features = dataset.counterfactual_features
        cf = {
            "X_train_cf": transform(cf_features, train_index, zeros[train_index]),
            "X_test_cf": transform(cf_features, test_index, zeros[test_index]),
            "cf_proba_train": _frozen(dataset.counterfactual_proba[train_index]),
            "cf_proba_test": _frozen(dataset.counterfactual_proba[test_index]),
        }
    return Prepared(
        dataset=dataset,
        X_train=X_train,
        X_test=transform(dataset.features, test_index, a_test),
        a_train=_frozen(a_train),
        a_test=_frozen(a_test),
        y_train=_frozen(dataset.y[train_index]),
        y_test=_frozen(dataset.y[test_index]),
        feature_names=tuple(names) + ((dataset.sensitive,) if include_sensitive else ()),
        preprocessor=transformer,
        train_index=_frozen(train_index),
        test_index=_frozen(test_index),
        include_sensitive=bool(include_sensitive),
        **cf,
    )

"""The firm's feature encoding, as the firm publishes it: raw records in, the firm's features out.

A user on a device holds raw records (``age = 39``, ``workclass = "Private"``);
the firm trains and scores on encoded features. The firm publishes how it
encodes, and every node applies it to its own rows, so the features a node
reports and scores itself on are the firm's, bit for bit:

* categorical columns are one-hot encoded, one 0/1 column per category in the
  firm's order; a category the firm does not know gives all zeros (the firm's
  ``handle_unknown="ignore"``);
* numerical columns are standardised, ``(x - mean) / scale`` in float64, with the
  firm's mean and scale (fitted on its training rows);
* the columns come in this order: every categorical block, then the numerical
  columns, then (if the firm uses it) the 0/1 sensitive attribute ``a``.

That is exactly what a fitted scikit-learn ``ColumnTransformer`` of a
``OneHotEncoder(handle_unknown="ignore")`` and a ``StandardScaler`` computes
(``simulations.datasets.prepare``); the simulation builds an :class:`Encoding`
from one (``simulations.flower.devices.encoding_of``). The spec travels as a
Flower ``ConfigRecord`` (:meth:`Encoding.to_config` / :meth:`Encoding.from_config`):
names, categories and float64 numbers, nothing executable.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .errors import DataError
from .validation import is_number_text

__all__ = ["ENCODING_FORMAT", "Encoding"]

ENCODING_FORMAT = "collective-fairness/encoding-1"  # the wire format's name and version


@dataclass(frozen=True)
class Encoding:
    """A published feature encoding (see the module docstring).

    ``categories[i]`` are the categories of ``categorical[i]`` in output order:
    all strings (compared with the raw value as text) or all numbers (compared with
    the raw value as a float64). ``mean[j]`` and ``scale[j]`` belong to ``numerical[j]``.
    """

    categorical: tuple[str, ...]
    categories: tuple[tuple, ...]
    numerical: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    append_sensitive: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("categorical", tuple(str(c) for c in self.categorical))
        set_("numerical", tuple(str(c) for c in self.numerical))
        set_("categories", tuple(tuple(c) for c in self.categories))
        for name in ("mean", "scale"):
            arr = np.array(getattr(self, name), dtype=np.float64).reshape(-1)
            arr.setflags(write=False)
            set_(name, arr)
        set_("append_sensitive", bool(self.append_sensitive))
        columns = self.categorical + self.numerical
        problems = []
        if len(set(columns)) != len(columns) or not all(columns):
            problems.append("column names must be distinct and non-empty")
        if len(self.categories) != len(self.categorical):
            problems.append(f"{len(self.categories)} category lists for {len(self.categorical)} categorical columns")
        for column, cats in zip(self.categorical, self.categories):
            kinds = {_kind(c) for c in cats}
            if not cats or len(kinds) != 1 or None in kinds:
                problems.append(f"categories of {column!r} must be non-empty and all strings or all numbers")
            elif len(set(cats)) != len(cats) or (kinds == {"number"} and not all(math.isfinite(c) for c in cats)):
                problems.append(f"categories of {column!r} must be distinct (and finite numbers)")
        if self.mean.shape != (len(self.numerical),) or self.scale.shape != (len(self.numerical),):
            problems.append(f"mean and scale need one value per numerical column ({len(self.numerical)})")
        elif not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all() and (self.scale != 0).all()):
            problems.append("mean and scale must be finite and scale non-zero")
        if problems:
            raise DataError(f"the firm's feature encoding is not usable: {'; '.join(problems)}; allowed: see "
                            "agents/encoding.py")

    # ------------------------------------------------------------------ shape

    @property
    def columns(self) -> tuple[str, ...]:
        """The raw feature columns a node's records must have."""
        return self.categorical + self.numerical

    @property
    def n_features(self) -> int:
        return sum(len(c) for c in self.categories) + len(self.numerical) + int(self.append_sensitive)

    # ------------------------------------------------------------------ wire

    def to_config(self) -> dict:
        """The spec as the contents of a Flower ``ConfigRecord`` (str, bool, lists of str/float)."""
        out = {"format": ENCODING_FORMAT, "categorical": list(self.categorical), "numerical": list(self.numerical),
               "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
               "append_sensitive": self.append_sensitive}
        for i, cats in enumerate(self.categories):
            text = _kind(cats[0]) == "text"
            out[f"categories-{i}"] = [str(c) if text else float(c) for c in cats]
        return out

    @classmethod
    def from_config(cls, config) -> "Encoding":
        """The spec from a ``ConfigRecord`` (or a dict) written by :meth:`to_config`."""
        try:
            config = dict(config)
            if config.get("format") != ENCODING_FORMAT:
                raise DataError(f"the firm's feature encoding has format {config.get('format')!r}; "
                                f"allowed: {ENCODING_FORMAT!r}")
            categorical = [str(c) for c in config["categorical"]]
            return cls(categorical=categorical,
                       categories=[list(config[f"categories-{i}"]) for i in range(len(categorical))],
                       numerical=[str(c) for c in config["numerical"]], mean=list(config["mean"]),
                       scale=list(config["scale"]), append_sensitive=bool(config["append_sensitive"]))
        except DataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the firm's feature encoding is malformed ({type(exc).__name__}: {exc}); "
                            f"allowed: a record written by Encoding.to_config ({ENCODING_FORMAT})") from None

    @property
    def digest(self) -> str:
        """SHA-256 of the spec's canonical JSON: two nodes with the same digest encode alike."""
        text = json.dumps(self.to_config(), sort_keys=True, allow_nan=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ encoding

    def encode(self, raw, *, a=None) -> np.ndarray:
        """The firm's features of raw records, one row per record (float64, C order).

        ``raw`` maps each of :attr:`columns` to its values, one per record: a pandas
        DataFrame, or a dict of arrays or lists. Values may be numbers or text (as read
        from a file; numbers are then parsed as Python's ``float`` does). ``a`` (0/1 per
        record) is needed when the firm appends the sensitive attribute. Vectorised: the
        same call encodes one user or millions. Raises :class:`DataError` for a missing
        column or a numerical value that is not a finite number.
        """
        missing = [c for c in self.columns if not _has(raw, c)]
        if missing:
            raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; allowed: records with every "
                            f"feature column the firm encodes ({', '.join(self.columns)})")
        values = {c: np.asarray(raw[c]).reshape(-1) for c in self.columns}
        sizes = {v.size for v in values.values()} or {np.asarray(a).size if a is not None else 0}
        if len(sizes) != 1:
            raise DataError("feature columns of different lengths; allowed: one value per record in every column")
        n = sizes.pop()
        out = np.zeros((n, self.n_features), dtype=np.float64)
        offset = 0
        rows = np.arange(n)
        for column, cats in zip(self.categorical, self.categories):
            v = values[column]
            if _kind(cats[0]) == "text":
                known, v = np.array(cats, dtype=str), _as_text(v)
            else:
                known, v = np.array(cats, dtype=np.float64), _as_numbers(v, column, finite=False)
            order = np.argsort(known, kind="stable")
            ranked = known[order]
            at = np.minimum(np.searchsorted(ranked, v), ranked.size - 1)
            hit = ranked[at] == v  # an unknown category: no 1 in its block (handle_unknown="ignore")
            out[rows[hit], offset + order[at[hit]]] = 1.0
            offset += len(cats)
        if self.numerical:
            x = np.column_stack([_as_numbers(values[c], c) for c in self.numerical])
            # The scaler's own float64 operations, in its order: subtract, then divide.
            x -= self.mean
            x /= self.scale
            out[:, offset:offset + len(self.numerical)] = x
            offset += len(self.numerical)
        if self.append_sensitive:
            if a is None:
                raise DataError("the firm's encoding appends the sensitive attribute a; allowed: encode(raw, a=...)")
            a = np.asarray(a).reshape(-1)
            if a.size != n:
                raise DataError(f"a has {a.size} values for {n} records; allowed: one 0/1 value per record")
            out[:, offset] = a.astype(np.float64)
        return out


def _kind(value) -> str | None:
    if isinstance(value, (str, np.str_)):
        return "text"
    if isinstance(value, (Integral, Real)) and not isinstance(value, (bool, np.bool_)):
        return "number"
    return None


def _has(raw, column: str) -> bool:
    try:
        return column in raw
    except TypeError:
        return False


def _as_text(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "U":
        return values
    return values.astype(str)


def _as_numbers(values: np.ndarray, column: str, *, finite: bool = True) -> np.ndarray:
    """float64 values of a column: numbers as they are, text parsed as Python's ``float`` parses it."""
    if values.dtype.kind in "biuf":
        out = values.astype(np.float64)
    else:
        text = _as_text(values)
        try:
            out = text.astype(np.float64)
        except ValueError:
            row = next(i for i, v in enumerate(text.tolist()) if not is_number_text(v))
            raise DataError(f"column {column!r} has a value that is not a number (record {row + 1}: "
                            f"{text.tolist()[row]!r}); allowed: numbers") from None
    if finite and not np.isfinite(out).all():
        row = int(np.flatnonzero(~np.isfinite(out))[0])
        raise DataError(f"column {column!r} has a non-finite value (record {row + 1}: {values.tolist()[row]!r}); "
                        "allowed: finite numbers")
    return out

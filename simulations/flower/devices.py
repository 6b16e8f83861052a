"""What a person's device holds in a federation, prepared for simulated people.

A user on a device keeps their own raw records (a CSV of the data set's raw
columns, nothing encoded) and the collective's invitation (``collective.json``:
the ticket keys, the coordinator's identity); the firm's feature encoding
reaches the device over the federation with the sign-up message
(:mod:`agents.encoding`, :mod:`server.relay`). Here the simulation writes those
files for its simulated users (``prepare_run(..., device_files="raw")``) and
builds the firm's published encoding from the firm's fitted preprocessing.

Raw file format (one record per user; see docs/federated.md, "On a device"):
``user_id``, the data set's raw feature columns (``Dataset.features``, as they
are: text categories, numbers), ``a`` (1 = protected minority) and ``y``
(1 = favourable label) as 0/1; simulated worlds add ``cf_proba`` (the oracle's
counterfactual probability, which a real person does not have).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from agents.encoding import Encoding
from agents.errors import DataError
from agents.node import CF_PROBA, LABEL, SENSITIVE, USER_ID, write_private

__all__ = ["encoding_of", "raw_records", "write_raw_records"]

RESERVED = (USER_ID, SENSITIVE, LABEL, CF_PROBA)


def encoding_of(prepared, *, check: bool = True) -> Encoding:
    """The firm's published encoding of a :class:`simulations.datasets.Prepared`: its fitted
    one-hot encoder's categories and its scaler's mean and scale, in the transformer's
    column order, with ``a`` appended when the firm uses it.

    With ``check`` the spec is applied to every training row's raw values and must give
    ``prepared.X_train`` bit for bit (it always has; a different scikit-learn arithmetic
    would fail here, not silently in a federation).
    """
    ct = prepared.preprocessor
    categorical, categories, numerical, mean, scale, blocks = [], [], [], [], [], []
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop" or not len(columns):
                continue
            raise DataError(f"the firm's preprocessing passes columns through ({name!r}); allowed: one-hot and "
                            "standard scaling only")
        params = transformer.get_params()
        if isinstance(transformer, OneHotEncoder) and params["handle_unknown"] == "ignore" and params["drop"] is None \
                and params["min_frequency"] is None and params["max_categories"] is None:
            categorical += list(columns)
            categories += [c.tolist() for c in transformer.categories_]
            blocks.append("categorical")
        elif isinstance(transformer, StandardScaler) and params["with_mean"] and params["with_std"]:
            numerical += list(columns)
            mean += transformer.mean_.tolist()
            scale += transformer.scale_.tolist()
            blocks.append("numerical")
        else:
            raise DataError(f"the firm's preprocessing step {name!r} ({transformer!r}) cannot be published; allowed: "
                            "OneHotEncoder(handle_unknown='ignore') and StandardScaler() with default options")
    if blocks not in (["categorical", "numerical"], ["categorical"], ["numerical"]):
        raise DataError(f"the firm's preprocessing has blocks {blocks}; allowed: one-hot then scaling")
    encoding = Encoding(categorical=categorical, categories=categories, numerical=numerical, mean=mean, scale=scale,
                        append_sensitive=prepared.include_sensitive)
    if check:
        d = prepared.dataset
        got = encoding.encode(d.features.iloc[prepared.train_index], a=prepared.a_train)
        if got.shape != prepared.X_train.shape or not np.array_equal(got.view(np.uint64),
                                                                   prepared.X_train.view(np.uint64)):
            raise RuntimeError("the published encoding does not reproduce the firm's training features bit for bit")
    return encoding


def raw_records(prepared, rows, user_ids) -> pd.DataFrame:
    """The raw records of training users ``rows`` (positions), as their device holds them:
    ``user_id``, the raw feature columns, ``a``, ``y`` (and ``cf_proba`` in simulated worlds)."""
    rows = np.asarray(rows)
    d = prepared.dataset
    clash = [c for c in d.features.columns if c in RESERVED]
    if clash:
        raise DataError(f"{d.name}: feature column(s) {', '.join(map(repr, clash))} clash with a raw file's own "
                        f"columns; allowed: feature columns named other than {', '.join(RESERVED)}")
    frame = d.features.iloc[prepared.train_index[rows]].reset_index(drop=True)
    frame.insert(0, USER_ID, np.asarray(user_ids, dtype=np.int64))
    frame[SENSITIVE] = prepared.a_train[rows].astype(np.int64)
    frame[LABEL] = prepared.y_train[rows].astype(np.int64)
    if prepared.cf_proba_train is not None:
        frame[CF_PROBA] = prepared.cf_proba_train[rows]
    return frame


def write_raw_records(path, frame: pd.DataFrame) -> Path:
    """A raw records CSV, readable by its owner only (floats as ``repr``: they read back exactly)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    data = buffer.getvalue().encode("utf-8")
    return write_private(path, lambda fh: fh.write(data))

"""The firm's published encoding reproduces prepare()'s features bit for bit, from raw values or raw text."""

import numpy as np
import pandas as pd
import pytest

from agents.encoding import Encoding
from agents.errors import DataError
from agents.node import load_raw_records
from simulations.datasets import load_dataset, prepare
from simulations.flower.devices import encoding_of, raw_records, write_raw_records


def bits(x) -> np.ndarray:
    """The IEEE bit patterns: equal bits, not merely equal values (0.0 vs -0.0, NaN)."""
    return np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)


def numeric_category_csv(tmp_path):
    """A user's CSV whose categorical column holds numbers (categories are floats then)."""
    rng = np.random.default_rng(5)
    n = 200
    frame = pd.DataFrame({"grade": rng.integers(1, 5, n), "income": rng.normal(50, 10, n).round(3),
                          "group": rng.integers(0, 2, n), "label": rng.integers(0, 2, n)})
    path = tmp_path / "numeric-categories.csv"
    frame.to_csv(path, index=False)
    return load_dataset("csv", path=str(path), label="label", favourable=1, sensitive="group", protected=1,
                        categorical=["grade"])


@pytest.fixture(scope="module", params=["adult", "german", "compas", "synthetic", "numeric-categories"])
def prepared(request, tmp_path_factory):
    if request.param == "numeric-categories":
        dataset = numeric_category_csv(tmp_path_factory.mktemp("csv"))
    else:
        dataset = load_dataset(request.param)
    return prepare(dataset, random_state=11, include_sensitive=request.param in ("german", "synthetic"))


def test_encode_reproduces_prepare_bit_for_bit(prepared):
    d = prepared.dataset
    encoding = Encoding.from_config(encoding_of(prepared).to_config())  # as a node receives it
    assert encoding.n_features == prepared.n_features
    for rows, a, X in ((prepared.train_index, prepared.a_train, prepared.X_train),
                       (prepared.test_index, prepared.a_test, prepared.X_test)):
        got = encoding.encode(d.features.iloc[rows], a=a)
        assert got.dtype == np.float64 and got.shape == X.shape
        np.testing.assert_array_equal(bits(got), bits(X))
    # one user at a time gives the same rows as all at once (vectorised, nothing shared)
    one = np.vstack([encoding.encode(d.features.iloc[[r]], a=prepared.a_test[[i]])
                     for i, r in enumerate(prepared.test_index[:5])])
    np.testing.assert_array_equal(bits(one), bits(prepared.X_test[:5]))


def test_encode_of_the_raw_text_a_device_holds_is_the_same(prepared, tmp_path):
    """Written as a device's CSV (numbers as text) and read back: still the firm's features, exactly."""
    rows = np.arange(min(400, prepared.a_train.size))
    path = write_raw_records(tmp_path / "me.csv", raw_records(prepared, rows, prepared.train_index[rows]))
    records = load_raw_records(path)
    assert all(v.dtype.kind == "U" for v in records.columns.values())  # nothing is encoded in the file
    got = encoding_of(prepared, check=False).encode(records.columns, a=records.a)
    np.testing.assert_array_equal(bits(got), bits(prepared.X_train[rows]))
    np.testing.assert_array_equal(records.a, prepared.a_train[rows])
    np.testing.assert_array_equal(records.y, prepared.y_train[rows])


def test_an_unknown_category_encodes_as_the_firms_encoder_does(prepared):
    d = prepared.dataset
    if not d.categorical:
        pytest.skip("no categorical column")
    frame = d.features.iloc[prepared.test_index[:20]].copy()
    column = d.categorical[0]
    unseen = "Atlantis" if frame[column].dtype.kind not in "iuf" else 10**6
    frame[column] = frame[column].astype(object)
    frame.iloc[::3, frame.columns.get_loc(column)] = unseen
    expected = np.asarray(prepared.preprocessor.transform(frame), dtype=np.float64)  # scikit-learn's own answer
    got = encoding_of(prepared).encode(frame, a=prepared.a_test[:20])[:, :expected.shape[1]]
    np.testing.assert_array_equal(bits(got), bits(expected))
    block = len(encoding_of(prepared).categories[0])
    assert (got[::3, :block] == 0).all() and (got[1::3, :block].sum(axis=1) == 1).all()


def test_wire_round_trip_and_digest():
    enc = Encoding(categorical=["c"], categories=[["b", "a"]], numerical=["x", "z"], mean=[1.0, -2.0],
                   scale=[2.0, 0.5], append_sensitive=True)
    back = Encoding.from_config(enc.to_config())
    assert back.to_config() == enc.to_config() and back.digest == enc.digest
    assert Encoding(categorical=["c"], categories=[["a", "b"]], numerical=["x", "z"], mean=[1.0, -2.0],
                    scale=[2.0, 0.5], append_sensitive=True).digest != enc.digest
    # hand-worked: category order is the firm's (b first), unknowns give zeros, (x - mean) / scale, then a
    got = enc.encode({"c": ["a", "b", "?"], "x": ["1", "3", "-1"], "z": [-2, -1, 0]}, a=[1, 0, 1])
    np.testing.assert_array_equal(got, [[0, 1, 0, 0, 1], [1, 0, 1, 2, 0], [0, 0, -1, 4, 1]])
    assert enc.encode({"c": [], "x": [], "z": []}, a=[]).shape == (0, 5)


@pytest.mark.parametrize("config, match", [
    ({"format": "other"}, "format"),
    ({"categorical": ["c"]}, "malformed"),
    ({"categories-0": ["a", 1.0]}, "all strings or all numbers"),
    ({"scale": [0.0]}, "scale non-zero"),
    ({"mean": [1.0, 2.0]}, "one value per numerical column"),
    ({"numerical": ["c"]}, "distinct"),
])
def test_a_malformed_encoding_is_one_clear_error(config, match):
    good = Encoding(categorical=["c"], categories=[["a"]], numerical=["x"], mean=[0.0], scale=[1.0]).to_config()
    good.pop("categories-0") if "categorical" in config else None
    with pytest.raises(DataError, match=match):
        Encoding.from_config({**good, **config})


@pytest.mark.parametrize("column, value, match", [
    ("x", "abc", r"column 'x' has a value that is not a number \(record 2: 'abc'\)"),
    ("x", "inf", r"column 'x' has a non-finite value \(record 2"),
    ("x", "", r"not a number \(record 2: ''\)"),
])
def test_bad_numerical_values_are_named(column, value, match):
    enc = Encoding(categorical=["c"], categories=[["a"]], numerical=["x"], mean=[0.0], scale=[1.0])
    raw = {"c": ["a", "a"], "x": ["1", value]}
    with pytest.raises(DataError, match=match):
        enc.encode(raw)
    with pytest.raises(DataError, match=r"missing column\(s\) 'x'"):
        enc.encode({"c": ["a"]})
    with pytest.raises(DataError, match="appends the sensitive attribute"):
        Encoding(categorical=[], categories=[], numerical=["x"], mean=[0.0], scale=[1.0],
                 append_sensitive=True).encode({"x": [1.0]})

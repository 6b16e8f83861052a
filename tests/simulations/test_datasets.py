"""Tests for simulations.datasets: loaders checked against independent counts of the raw files."""

import csv
import gzip
import hashlib
import importlib.resources
import io
import math
import os
import time
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from simulations import datasets as ds
from simulations.datasets import Dataset, RemoteFile, fetch_file, load_dataset, prepare
from agents.errors import CollectiveFairnessError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
GERMAN = ds.REMOTE_FILES["german.data"]
COMPAS = ds.REMOTE_FILES["compas-scores-two-years.csv"]


@pytest.fixture
def mirror():
    """Folder of original files: $COLLECTIVE_FAIRNESS_MIRROR, else ../shared/datasets, else skip."""
    folder = Path(os.environ.get(ds.MIRROR_ENV) or REPO.parent / "shared" / "datasets")
    if not folder.is_dir():
        pytest.skip(f"no dataset mirror at {folder}; set {ds.MIRROR_ENV}")
    return folder


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty cache, no mirror from the environment, and any network access fails the test."""

    def no_network(*args, **kwargs):
        raise AssertionError("tests must not use the network")

    monkeypatch.delenv(ds.MIRROR_ENV, raising=False)
    monkeypatch.setattr(ds.urllib.request, "urlopen", no_network)
    return tmp_path / "cache"


# --------------------------------------------------------------------------- errors


def test_error_hierarchy():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, CollectiveFairnessError)
    assert issubclass(DataError, ValueError) and issubclass(DataError, CollectiveFairnessError)


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (lambda: load_dataset("mnist"), ["'mnist'", "adult, compas, german, synthetic, toy, csv"]),
        (lambda: load_dataset("adult", sensitive="age"), ["'age'", "sex, race"]),
        (lambda: load_dataset("german", sensitive="race"), ["'race'", "allowed: sex"]),
        (lambda: load_dataset("synthetic", size=3), ["size", "n_features", "label_bias"]),
        (lambda: load_dataset("adult", n=3), ["unknown option", "allowed: none"]),
        (lambda: load_dataset("toy", n_features=3), ["n_features", "allowed"]),
    ],
)
def test_bad_names_and_options_are_config_errors(call, fragments):
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# --------------------------------------------------------------------------- adult


def _adult_reference_counts():
    """Count rows / >50K / female straight from the bundled gzip files with the csv module."""
    rows = rich = female = 0
    for name in ("adult.data", "adult.test"):
        path = importlib.resources.files("simulations").joinpath("data", name + ".gz")
        text = gzip.decompress(path.read_bytes()).decode()
        for i, record in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True)):
            if (name == "adult.test" and i == 0) or len(record) != 15 or "?" in record:
                continue
            rows += 1
            rich += record[14].rstrip(".") == ">50K"
            female += record[9] == "Female"
    return rows, rich, female


def test_adult_matches_raw_file_counts():
    data = load_dataset("adult")
    rows, rich, female = _adult_reference_counts()
    assert data.n_samples == rows == 45_222
    assert int(data.y.sum()) == rich and int(data.a.sum()) == female
    assert round(data.favourable_rate, 3) == 0.248 and round(data.protected_rate, 3) == 0.325
    assert data.sensitive == "sex" and data.a.dtype == np.int8 and data.y.dtype == np.int8
    assert set(data.features.columns).isdisjoint({"sex", "fnlwgt", "income"})
    assert "race" in data.categorical and "age" in data.numerical
    assert not data.has_counterfactual and data.counterfactual_proba is None
    assert "10.24432/C5XW20" in data.source


def test_adult_race_keeps_sex_as_feature():
    data = load_dataset("adult", sensitive="race")
    assert data.sensitive == "race" and "sex" in data.categorical and "race" not in data.features
    expected = (load_dataset("adult").features["race"] != "White").to_numpy()
    np.testing.assert_array_equal(data.a, expected.astype(np.int8))


def test_adult_parse_is_fast_and_cached():
    ds._adult_frame.cache_clear()
    start = time.perf_counter()
    load_dataset("adult")
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    load_dataset("adult")
    assert time.perf_counter() - start < 0.2


def test_bundled_files_are_deterministic_gzip_with_documented_hashes():
    readme = importlib.resources.files("simulations").joinpath("data", "README.md").read_text()
    assert "CC BY 4.0" in readme and "10.24432/C5XW20" in readme
    for name, sha in ds._BUNDLED_SHA256.items():
        packed = importlib.resources.files("simulations").joinpath("data", name + ".gz")
        packed = packed.read_bytes()
        assert packed[4:8] == b"\0\0\0\0"  # gzip mtime field
        assert hashlib.sha256(gzip.decompress(packed)).hexdigest() == sha
        assert sha in readme


def test_adult_data_is_read_only():
    data = load_dataset("adult")
    with pytest.raises(ValueError):
        data.y[0] = 1
    with pytest.raises(AttributeError):
        data.name = "other"


# --------------------------------------------------------------------------- compas, german


def _compas_reference(path):
    kept = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            days = row["days_b_screening_arrest"]
            if (days and abs(float(days)) <= 30 and row["is_recid"] != "-1"
                    and row["c_charge_degree"] != "O" and row["score_text"] != "N/A"):
                kept.append(row)
    return kept


def test_compas_from_mirror(mirror, offline):
    data = load_dataset("compas", mirror=mirror, data_home=offline)
    kept = _compas_reference(mirror / COMPAS.filename)
    assert len(kept) == 6_172
    pair = [r for r in kept if r["race"] in ("African-American", "Caucasian")]
    assert data.n_samples == len(pair) == 3_175 + 2_103
    assert int(data.a.sum()) == 3_175
    assert int(data.y.sum()) == sum(r["two_year_recid"] == "0" for r in pair)
    assert data.features.columns.tolist() == [
        "sex", "age", "age_cat", "juv_fel_count", "juv_misd_count", "juv_other_count",
        "priors_count", "c_charge_degree",
    ]
    assert set(data.categorical) == {"sex", "age_cat", "c_charge_degree"}
    assert not offline.exists()  # the mirror is read in place, nothing copied


def test_compas_mirror_from_environment(mirror, offline, monkeypatch):
    monkeypatch.setenv(ds.MIRROR_ENV, str(mirror))
    assert load_dataset("compas", data_home=offline).n_samples == 5_278


def test_german_from_mirror(mirror, offline):
    data = load_dataset("german", mirror=mirror, data_home=offline)
    assert data.n_samples == 1_000
    assert int(data.a.sum()) == 310  # A92 only; A95 does not occur in the file
    assert int(data.y.sum()) == 700
    assert "personal_status_sex" not in data.features and "credit" not in data.features
    assert data.features.shape[1] == 19 and len(data.numerical) == 7
    assert data.features["credit_amount"].iloc[0] == 1169  # first row: A11 6 A34 A43 1169 ...


def test_missing_mirror_file_is_data_error(tmp_path, offline):
    with pytest.raises(DataError) as info:
        load_dataset("german", mirror=tmp_path, data_home=offline)
    message = str(info.value)
    assert GERMAN.filename in message and str(tmp_path) in message
    assert GERMAN.sha256 in message and ds.MIRROR_ENV in message


def test_wrong_hash_in_mirror_is_data_error(tmp_path, offline):
    (tmp_path / GERMAN.filename).write_text("A11 6 A34 A43 1169 not the original\n")
    with pytest.raises(DataError) as info:
        load_dataset("german", mirror=tmp_path, data_home=offline)
    assert GERMAN.sha256 in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- download path


@pytest.fixture
def served_file(tmp_path, monkeypatch):
    """A small file 'served' through a file:// URL, plus its RemoteFile description."""
    monkeypatch.delenv(ds.MIRROR_ENV, raising=False)
    source = tmp_path / "server" / "tiny.csv"
    source.parent.mkdir()
    source.write_bytes(b"x,y\n1,2\n")
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    remote = RemoteFile("tiny.csv", source.as_uri(), sha)
    return source, remote, tmp_path / "cache"


def test_download_verifies_and_caches(served_file, monkeypatch):
    source, remote, cache = served_file
    path = fetch_file(remote, data_home=cache)
    assert path == cache / "tiny.csv" and path.read_bytes() == source.read_bytes()
    assert list(cache.iterdir()) == [path]  # no partial files left behind

    def no_network(*args, **kwargs):
        raise AssertionError("a verified cached copy must not be downloaded again")

    monkeypatch.setattr(ds.urllib.request, "urlopen", no_network)
    assert fetch_file(remote, data_home=cache) == path


def test_download_uses_data_home_env(served_file, monkeypatch):
    _, remote, cache = served_file
    monkeypatch.setenv(ds.DATA_HOME_ENV, str(cache))
    assert ds.default_data_home() == cache
    assert fetch_file(remote) == cache / "tiny.csv"


def test_download_with_wrong_hash_caches_nothing(served_file):
    _, remote, cache = served_file
    bad = RemoteFile(remote.filename, remote.url, "0" * 64)
    with pytest.raises(DataError, match="expected 0{64}"):
        fetch_file(bad, data_home=cache)
    assert not (cache / "tiny.csv").exists()


def test_corrupt_cached_copy_is_replaced(served_file):
    source, remote, cache = served_file
    cache.mkdir()
    (cache / "tiny.csv").write_bytes(b"truncated")
    assert fetch_file(remote, data_home=cache).read_bytes() == source.read_bytes()


def test_no_network_is_data_error(served_file, monkeypatch):
    _, remote, cache = served_file

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(ds.urllib.request, "urlopen", unreachable)
    with pytest.raises(DataError) as info:
        fetch_file(remote, data_home=cache)
    message = str(info.value)
    assert "Name or service not known" in message and remote.sha256 in message
    assert ds.MIRROR_ENV in message and "\n" not in message


def test_german_download_through_file_url(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv(ds.MIRROR_ENV, raising=False)
    local = RemoteFile(GERMAN.filename, (mirror / GERMAN.filename).as_uri(), GERMAN.sha256)
    monkeypatch.setitem(ds.REMOTE_FILES, GERMAN.filename, local)
    data = load_dataset("german", data_home=tmp_path)
    assert data.n_samples == 1_000 and (tmp_path / GERMAN.filename).is_file()


# --------------------------------------------------------------------------- csv


@pytest.fixture
def user_csv(tmp_path):
    frame = pd.DataFrame(
        {
            "age": [25, 40, 33, 51, 29, 62, 45, 38],
            "city": ["A", "B", "A", "C", "B", "A", "C", "B"],
            "zip": [10, 20, 10, 30, 20, 10, 30, 20],
            "gender": ["f", "m", "m", "f", "m", "m", "f", "m"],
            "hired": [1, 0, 1, 0, 1, 1, 0, 0],
        }
    )
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    return path


def test_csv_loader(user_csv):
    data = load_dataset(
        "csv", path=str(user_csv), label="hired", sensitive="gender", favourable=1, protected="f"
    )
    assert data.name == "people" and data.sensitive == "gender"
    np.testing.assert_array_equal(data.y, [1, 0, 1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(data.a, [1, 0, 0, 1, 0, 0, 1, 0])
    assert data.categorical == ("city",) and data.numerical == ("age", "zip")
    assert data.features.columns.tolist() == ["age", "city", "zip"]


def test_csv_loader_options(user_csv):
    # TOML/CLI values arrive as text: "0" must match the integer column.
    data = load_dataset(
        "csv", path=user_csv, label="hired", sensitive="gender", favourable="0", protected="m",
        categorical=["city", "zip"], features=["city", "zip"], name="mine",
    )
    assert data.name == "mine" and int(data.y.sum()) == 4 and int(data.a.sum()) == 5
    assert data.categorical == ("city", "zip") and data.numerical == ()


def _csv_options(path, /, **changes):
    options = dict(path=path, label="hired", sensitive="gender", favourable=1, protected="f")
    options.update(changes)
    return options


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"path": "/nonexistent/x.csv"}, ["does not exist", "x.csv"]),
        ({"label": "salary"}, ["label column 'salary'", "allowed: one of age, city, zip, gender, hired"]),
        ({"sensitive": "race"}, ["sensitive column 'race'", "allowed: one of"]),
        ({"favourable": 7}, ["favourable=7", "values: 0, 1"]),
        ({"protected": "x"}, ["protected='x'", "values: f, m"]),
        ({"categorical": ["zip", "foo"]}, ["'foo'", "allowed"]),
        ({"features": ["city"], "categorical": []}, ["'city'", "add them to categorical"]),
        ({"features": ["hired"]}, ["'hired'", "not usable"]),
        ({"sensitive": "hired", "protected": 1}, ["different columns"]),
    ],
)
def test_csv_bad_input(user_csv, changes, fragments):
    with pytest.raises(DataError) as info:
        load_dataset("csv", **_csv_options(user_csv, **changes))
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label": "city", "favourable": "A"},
         "label column 'city' of people.csv has 3 distinct values (A, B, C); allowed: exactly two values, "
         "one of them favourable='A'; recode the column to two classes first"),
        ({"label": "zip", "favourable": 10}, "label column 'zip' of people.csv has 3 distinct values (10, 20, 30)"),
        ({"sensitive": "city", "protected": "C"},
         "sensitive column 'city' of people.csv has 3 distinct values (A, B, C); allowed: exactly two values, "
         "one of them protected='C'"),
    ],
)
def test_csv_label_or_sensitive_with_more_than_two_values_is_refused(user_csv, changes, message):
    # y = (label == favourable) would silently lump the other classes together.
    with pytest.raises(DataError) as info:
        load_dataset("csv", **_csv_options(user_csv, **changes))
    assert str(info.value) == message or str(info.value).startswith(message)


def test_csv_single_class_and_missing_values(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "g": [1, 0, 1], "y": [1, 1, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="holds a single value \\(1\\); allowed: exactly two values"):
        load_dataset("csv", path=path, label="y", sensitive="g", favourable=1, protected=1)
    pd.DataFrame({"x": [1.0, None, 3.0], "g": [1, 0, 1], "y": [1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"'x' of one.csv have missing values \(1 rows\)"):
        load_dataset("csv", path=path, label="y", sensitive="g", favourable=1, protected=1)


def test_csv_missing_required_option_is_config_error(user_csv):
    with pytest.raises(ConfigError, match="needs option\\(s\\) favourable, protected"):
        load_dataset("csv", path=user_csv, label="hired", sensitive="gender")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_counterfactuals_follow_the_scm():
    data = load_dataset("synthetic", n=5_000, n_features=4, feature_shift=1.3, random_state=7)
    x = data.features.to_numpy()
    u = data.counterfactual_features.to_numpy()
    majority, minority = data.a == 0, data.a == 1
    assert np.array_equal(x[majority], u[majority])  # do(A=0) changes nothing for a=0
    np.testing.assert_allclose(u[minority] - x[minority], [[1.3, 0, 0, 0]] * minority.sum())
    np.testing.assert_allclose(data.counterfactual_proba, expit(u.sum(axis=1) * 2.0 / math.sqrt(4)))
    assert data.categorical == () and data.numerical == ("x1", "x2", "x3", "x4")
    assert data.sensitive == "a" and data.has_counterfactual


def test_synthetic_label_and_group_rates_match_the_model():
    data = load_dataset(
        "synthetic", n=40_000, minority_fraction=0.2, label_bias=1.5, random_state=1
    )
    logits = np.log(data.counterfactual_proba / (1 - data.counterfactual_proba))
    factual = expit(logits - 1.5 * data.a)
    for group in (0, 1):
        rows = data.a == group
        sd = math.sqrt(0.25 / rows.sum())
        assert abs(data.y[rows].mean() - factual[rows].mean()) < 4 * sd
    assert abs(data.protected_rate - 0.2) < 4 * math.sqrt(0.16 / 40_000)
    assert data.y[data.a == 1].mean() < data.y[data.a == 0].mean() - 0.15  # the built-in bias


def test_synthetic_is_deterministic():
    first = load_dataset("synthetic", n=500, random_state=3)
    again = load_dataset("synthetic", n=500, random_state=3)
    other = load_dataset("synthetic", n=500, random_state=4)
    pd.testing.assert_frame_equal(first.features, again.features)
    assert np.array_equal(first.y, again.y) and np.array_equal(first.a, again.a)
    assert not first.features.equals(other.features)
    from_gen = load_dataset("synthetic", n=500, random_state=np.random.default_rng(3))
    pd.testing.assert_frame_equal(first.features, from_gen.features)
    assert load_dataset("synthetic").n_samples == 20_000


def test_toy_is_two_dimensional():
    data = load_dataset("toy")
    assert data.name == "toy" and data.n_samples == 2_000
    assert data.features.columns.tolist() == ["x1", "x2"]


@pytest.mark.parametrize(
    "options",
    [{"n_features": 0}, {"minority_fraction": 1.0}, {"n": 2.5}, {"n": True},
     {"label_bias": float("nan")}, {"random_state": "seed"}, {"random_state": -1}],
)
def test_synthetic_bad_options(options):
    with pytest.raises(ConfigError, match="is not allowed"):
        load_dataset("synthetic", **options)


# --------------------------------------------------------------------------- prepare


def _small_dataset():
    features = pd.DataFrame(
        {"colour": ["red", "blue", "green", "red"] * 25 + ["purple"], "size": np.arange(101.0)}
    )
    a = np.array([0, 1] * 50 + [0])
    y = np.array([0, 0, 1, 1] * 25 + [1])
    return Dataset("small", features, a, y, "g", ("colour",), ("size",))


def test_prepare_adult_shapes_and_types():
    prep = prepare(load_dataset("adult"), random_state=0)
    assert prep.X_train.shape[0] == 31_655 and prep.X_test.shape[0] == 13_567
    assert 95 <= prep.n_features <= 105 and len(prep.feature_names) == prep.n_features
    for X in (prep.X_train, prep.X_test):
        assert X.dtype == np.float64 and X.flags.c_contiguous
    for v in (prep.a_train, prep.a_test, prep.y_train, prep.y_test):
        assert v.dtype == np.int8
    assert not prep.has_counterfactual and prep.X_test_cf is None
    # stratified by (a, y): every cell keeps its share in both parts
    for a in (0, 1):
        for y in (0, 1):
            share_train = np.mean((prep.a_train == a) & (prep.y_train == y))
            share_test = np.mean((prep.a_test == a) & (prep.y_test == y))
            assert abs(share_train - share_test) < 1e-3


def test_prepare_fits_on_training_rows_only():
    data = _small_dataset()
    prep = prepare(data, test_size=0.3, random_state=5)
    train = data.features.iloc[prep.train_index]
    scaler = prep.preprocessor.named_transformers_["numerical"]
    assert scaler.mean_[0] == pytest.approx(train["size"].mean())
    assert scaler.mean_[0] != pytest.approx(data.features["size"].mean())
    np.testing.assert_allclose(prep.X_train[:, -1].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(prep.X_train[:, -1].std(), 1)
    assert sorted(np.concatenate([prep.train_index, prep.test_index]).tolist()) == list(range(101))
    np.testing.assert_array_equal(prep.y_test, data.y[prep.test_index])
    # "purple" occurs once: it is a training category or an all-zero (ignored) test row
    purple_in_train = 100 in prep.train_index
    assert ("colour_purple" in prep.feature_names) == purple_in_train
    if not purple_in_train:
        row = int(np.flatnonzero(prep.test_index == 100)[0])
        assert prep.X_test[row, :-1].sum() == 0


def test_prepare_include_sensitive_and_determinism():
    data = _small_dataset()
    plain = prepare(data, random_state=2)
    with_a = prepare(data, include_sensitive=True, random_state=2)
    assert with_a.n_features == plain.n_features + 1 and with_a.feature_names[-1] == "g"
    np.testing.assert_array_equal(with_a.X_train[:, -1], with_a.a_train)
    np.testing.assert_array_equal(with_a.X_test[:, :-1], plain.X_test)
    again = prepare(data, random_state=2)
    np.testing.assert_array_equal(again.train_index, plain.train_index)
    np.testing.assert_array_equal(again.X_train, plain.X_train)
    gen1 = prepare(data, random_state=np.random.default_rng(9))
    gen2 = prepare(data, random_state=np.random.default_rng(9))
    np.testing.assert_array_equal(gen1.test_index, gen2.test_index)
    with pytest.raises(ValueError):
        plain.y_train[0] = 1  # read-only: copy before flipping labels


def test_prepare_counterfactuals_on_synthetic():
    data = load_dataset("synthetic", n=2_000, random_state=0)
    prep = prepare(data, include_sensitive=True, random_state=1)
    expected = prep.preprocessor.transform(data.counterfactual_features.iloc[prep.test_index])
    np.testing.assert_allclose(prep.X_test_cf[:, :-1], expected)
    assert (prep.X_test_cf[:, -1] == 0).all() and (prep.X_train_cf[:, -1] == 0).all()
    majority = prep.a_test == 0
    np.testing.assert_array_equal(prep.X_test_cf[majority], prep.X_test[majority])
    assert not np.allclose(prep.X_test_cf[~majority], prep.X_test[~majority])
    np.testing.assert_array_equal(prep.cf_proba_test, data.counterfactual_proba[prep.test_index])
    np.testing.assert_array_equal(prep.cf_proba_train, data.counterfactual_proba[prep.train_index])
    assert prep.X_train_cf.shape == prep.X_train.shape


@pytest.mark.parametrize("test_size", [0.0, 1.0, 0, 101, "0.3", True])
def test_prepare_bad_test_size(test_size):
    with pytest.raises(ConfigError, match="test_size"):
        prepare(_small_dataset(), test_size=test_size, random_state=0)


def test_prepare_bad_random_state_and_tiny_stratum():
    with pytest.raises(ConfigError, match="random_state"):
        prepare(_small_dataset(), random_state=None)
    data = _small_dataset()
    y = data.y.copy()
    y[np.flatnonzero((data.a == 1) & (data.y == 1))[1:]] = 0  # keep one (a=1, y=1) row
    lonely = Dataset("lonely", data.features, data.a, y, "g", ("colour",), ("size",))
    with pytest.raises(DataError, match=r"\(a=1, y=1\) has a single row"):
        prepare(lonely, random_state=0)


def test_dataset_validates_its_fields():
    features = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(DataError, match="must contain only 0 and 1"):
        Dataset("d", features, [0, 2], [0, 1], "g", (), ("x",))
    with pytest.raises(DataError, match="exactly once"):
        Dataset("d", features, [0, 1], [0, 1], "g", ("x",), ("x",))
    with pytest.raises(DataError, match="same number of rows"):
        Dataset("d", features, [0, 1, 1], [0, 1, 1], "g", (), ("x",))

"""Nodes that hold raw records (CSV) and the collective's invitation give the engine's results."""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from agents.encoding import Encoding
from server.server_app import load_firm_spec
from simulations import engine
from simulations.flower.files import prepare_run, results_frame
from simulations.flower.inprocess import run_in_process
from simulations.scenario import Scenario
from simulations.state import build_world

# 86 toy rows -> 60 training users; every method (the oracle reads cf_proba from the file).
TOY = Scenario(name="toy-devices").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-label", "rb-dist", "random", "oracle"),
    collective__alphas=(0.1, 0.3, 0.6), collective__budgets=(0.0, 0.2, 0.5, 1.0, 7), engine__n_jobs=1,
    collective__validation=0.0,
)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


@pytest.fixture(scope="module")
def reference(dataset):
    return engine.run_seed(TOY, 0, dataset=dataset)


def assert_same_as_engine(frame, reference):
    cols = [c for c in reference.columns if c != "backend"]
    pd.testing.assert_frame_equal(frame[cols], reference[cols], check_exact=True)


def device_csv(dataset, world, rows) -> pd.DataFrame:
    """What the docs say a device's file holds, built here independently of the code that writes it."""
    p = world.prepared
    out = pd.DataFrame({"user_id": world.user_ids[rows]})
    for column in dataset.features.columns:
        out[column] = dataset.features[column].to_numpy()[p.train_index[rows]]
    out["a"], out["y"], out["cf_proba"] = p.a_train[rows], p.y_train[rows], dataset.counterfactual_proba[p.train_index[rows]]
    return out


@pytest.mark.parametrize("k", [7, 1])
def test_in_process_nodes_of_raw_records_match_the_engine(k, dataset, reference, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=k, device_files="raw")
    users = files.node_files[:-1]
    assert all(p.suffix == ".csv" for p in users) and files.node_files[-1].suffix == ".npz"  # + the coordinator
    results = run_in_process(files, rounds=2)
    for round_ in (0, 1):
        assert_same_as_engine(results_frame(TOY, dataset, 0, results, round_=round_), reference)
    assert not results["rounds"][0]["errors"]


def test_device_files_hold_raw_records_only_and_are_private(dataset, tmp_path):
    old = os.umask(0)
    try:
        files = prepare_run(TOY, 0, tmp_path / "run", dataset=dataset, agents_per_node=25, device_files="raw")
    finally:
        os.umask(old)
    world = build_world(TOY, dataset, 0)
    assert [p.name for p in files.node_files] == ["node-0.csv", "node-1.csv", "node-2.csv", "node-3.npz"]
    for i, path in enumerate(files.node_files[:-1]):
        rows = np.arange(25 * i, min(25 * (i + 1), 60))
        got = pd.read_csv(path)  # pandas reads floats back exactly
        assert list(got.columns) == ["user_id", "x1", "x2", "a", "y", "cf_proba"]  # raw columns: nothing encoded
        pd.testing.assert_frame_equal(got, device_csv(dataset, world, rows), check_dtype=False, check_exact=True)
    invitation = json.loads(files.invitation.read_text())
    assert (invitation["membership_key"], invitation["tie_key"]) == (world.membership_key, world.tie_key)
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in (*files.node_files, files.invitation)] == [0o600] * 5
    # the firm's spec carries the encoding it publishes, and it is the firm's own
    encoding = Encoding.from_config(load_firm_spec(files.run_dir).encoding)
    assert encoding.numerical == ("x1", "x2") and encoding.n_features == world.prepared.n_features
    # a SuperNode's node config names its file and the invitation (the coordinator has its own file)
    assert files.node_config(0) == {"data-path": str(files.node_files[0].resolve()),
                                    "collective": str(files.invitation.resolve()), "partition-id": 0,
                                    "num-partitions": 4}
    assert "collective" not in files.node_config(3)


@pytest.mark.parametrize("line, why", [
    ("{id},oops,0.5,1,0,0.5", "column 'x1' has a value that is not a number (record 26: 'oops')"),
    ("{id},0.1,0.5,2,0,0.5", "column 'a' of record 26 is '2'"),
    ("{id},0.1,0.5,1,yes,0.5", "column 'y' of record 26 is 'yes'"),
    ("{first},0.1,0.5,1,0,0.5", "occurs 2 times"),
])
def test_a_bad_device_file_is_one_counted_error_and_the_round_completes(line, why, dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=25, device_files="raw")
    bad = files.node_files[1]
    first = pd.read_csv(bad)["user_id"].iloc[0]
    with open(bad, "a", encoding="utf-8") as fh:
        fh.write(line.format(id=10**6, first=first) + "\n")
    results = run_in_process(files, rounds=1)
    r = results["rounds"][0]
    assert r["messages"]["query.join"]["errors"] == 1
    assert [e for e in r["errors"] if why in e and "node-1.csv" in e]  # what is wrong, and where
    assert r["training"] == "trained" and r["n_train"] == 60 - 25  # the other nodes' users, nothing else
    missing = bad.with_name("missing.csv")
    bad.rename(missing)
    missing.with_name("node-1.csv").write_text(missing.read_text().replace("user_id,", "id,", 1))
    r = run_in_process(files, rounds=1)["rounds"][0]
    assert [e for e in r["errors"] if "node-1.csv: missing column(s) 'user_id'" in e] and r["n_train"] == 35


def test_devices_do_not_answer_the_evaluator_without_their_owners_consent(dataset, tmp_path):
    """Whoever runs the ServerApp cannot read devices' true labels by switching to the evaluator:
    a node started with its own data file answers evaluate.cells only with node config
    evaluator=true. Without it every user node refuses, nothing reaches the evaluator, and the
    round still completes."""
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=25, device_files="raw")
    seen = []

    def record(node_id, msg, reply):
        if msg.metadata.message_type == "evaluate.cells" and reply.has_content():
            seen.append(reply.content)
        return reply

    results = run_in_process(files, rounds=1, mode="evaluate", consent=False, tamper=record)
    r = results["rounds"][0]
    users = files.n_nodes - 1  # the coordinator has no users
    assert r["messages"]["evaluate.cells"]["errors"] == users and r["metrics"] is None
    assert [e for e in r["errors"] if "does not answer the experimenter's evaluator" in e]
    assert not [c for c in seen if "report" in c]  # not one labels array left a device
    assert r["training"].startswith("skipped")
    # With consent (the deploy command's --evaluate), the same nodes answer.
    assert run_in_process(files, rounds=1, mode="evaluate", consent=True)["rounds"][0]["training"] == "trained"

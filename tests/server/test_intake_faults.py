"""Issue 8, the firm's side: one node cannot break a round (in-process grid, real ClientApps)."""

import io

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from agents.node import load_node_file
from agents.protocol import arrays_of, record_of
from server.firm import Firm, make_estimator
from server.training import TestSet as Held
from server.training import evaluate, train_cells
from simulations import engine
from simulations.flower.files import prepare_run
from simulations.flower.inprocess import run_in_process
from simulations.scenario import Scenario

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6), collective__budgets=(0.5, 1.0),
    engine__n_jobs=1, collective__validation=0.0,
)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


def _reply(msg, **records):
    return Message(RecordDict(records), reply_to=msg)


def _arrays(reply):
    return arrays_of(reply.content["report"])


def _changed(**update):
    def change(msg, reply):
        return _reply(msg, report=record_of(**{**_arrays(reply), **update(reply)}))
    return change


def _object_a(msg, reply):
    buf = io.BytesIO()
    np.save(buf, np.array(["x"] * _arrays(reply)["a"].size, dtype=object), allow_pickle=True)
    record = ArrayRecord({k: Array(v) for k, v in _arrays(reply).items()})
    record["a"] = Array(dtype="object", shape=(_arrays(reply)["a"].size,), stype="numpy.ndarray", data=buf.getvalue())
    return _reply(msg, report=record)


def _huge(r):
    r["X"] = np.array(r["X"], copy=True)
    r["X"][0, 0] = 1e300
    return r


FAULTS = {  # node -> (tamper of its train.report reply, the reason it is rejected under)
    1000: (lambda msg, reply: _reply(msg, report=ConfigRecord({"user_ids": [1, 2], "X": [0.5, 0.5]})), "record-type"),
    1001: (lambda msg, reply: _reply(msg), "no-report"),
    1002: (lambda msg, reply: _reply(msg, report=record_of(**{k: (v + 0j if k == "X" else v)
                                                             for k, v in _arrays(reply).items()})), "dtype"),
    1003: (_object_a, "dtype"),
    1004: (lambda msg, reply: _reply(msg, report=record_of(**{k: (v.astype(str) if k == "labels" else v)
                                                             for k, v in _arrays(reply).items()})), "dtype"),
    1005: (lambda msg, reply: _reply(msg, report=record_of(**_arrays(reply), extra=np.zeros(25_000_000))),
           "extra-array"),  # 200 MB
    1006: (lambda msg, reply: _reply(msg, report=record_of(**{**_arrays(reply),
                                                             "X": np.zeros((5, 5_000_000))})), "size"),  # 200 MB
    1007: (lambda msg, reply: _reply(msg, report=record_of(**_huge(_arrays(reply)))), "schema"),
}


def test_every_malformed_reply_is_rejected_and_counted(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=5)  # 12 user nodes + coordinator

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type != "evaluate.cells" or node_id not in FAULTS:
            return reply
        return FAULTS[node_id][0](msg, reply)

    results = run_in_process(files, rounds=2, tamper=tamper)
    for r in results["rounds"]:
        assert r["nodes"]["rejected_nodes"] == {str(n): reason for n, (_, reason) in FAULTS.items()}
        assert r["nodes"]["reports_rejected"] == {"record-type": 1, "no-report": 1, "dtype": 3, "extra-array": 1,
                                                  "size": 1, "schema": 1}
        assert r["nodes"]["reports_accepted"] == 4 and r["n_train"] == 20 and r["training"] == "trained"
        assert all(np.isfinite(m["error"]) for m in r["metrics"])
    # The 1e300 row changed nothing: the metrics are those of a run without that node.
    clean = run_in_process(files, rounds=1, tamper=lambda n, msg, reply: (
        None if msg.metadata.message_type == "evaluate.cells" and n in FAULTS else reply))
    assert clean["rounds"][0]["metrics"] == results["rounds"][0]["metrics"]


def test_a_round_where_every_report_is_rejected_completes(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=20)

    def first_round_bad(node_id, msg, reply):
        if msg.metadata.message_type == "evaluate.cells" and int(msg.content["round"]["round"]) == 1:
            return _reply(msg, report=record_of(**{**_arrays(reply), "labels": _arrays(reply)["labels"] + 5}))
        return reply

    results = run_in_process(files, rounds=2, tamper=first_round_bad)
    first, second = results["rounds"]
    assert first["metrics"] is None and first["training"].startswith("skipped: no report was accepted")
    assert first["nodes"]["reports_rejected"] == {"labels": 3} and first["n_train"] == 0
    assert second["training"] == "trained" and second["n_train"] == 60 and len(second["metrics"]) == 9
    import json

    assert json.loads((tmp_path / "results.json").read_text())["rounds"][0]["metrics"] is None
    assert (tmp_path / "labels.npz").exists()


def test_owners_keep_their_users(dataset, tmp_path):
    """From round 2: node 1001 claims node 1002's users, node 1003 fills in for dead node 1004."""
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=5)
    ids = {i: load_node_file(files.node_files[i]).user_ids for i in range(12)}

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type != "evaluate.cells" or int(msg.content["round"]["round"]) == 1:
            return reply
        if node_id == 1001:
            return _reply(msg, report=record_of(**{**_arrays(reply), "user_ids": ids[2]}))
        if node_id == 1004:
            return None  # dead
        if node_id == 1003:  # its own users and the dead node's, each with the same row shape
            r, dead = _arrays(reply), load_node_file(files.node_files[4])
            return _reply(msg, report=record_of(
                user_ids=np.concatenate([r["user_ids"], dead.user_ids]), X=np.concatenate([r["X"], dead.X]),
                a=np.concatenate([r["a"], dead.a]), labels=np.concatenate([r["labels"], r["labels"]], axis=1)))
        return reply

    first, second = run_in_process(files, rounds=2, tamper=tamper)["rounds"]
    assert first["nodes"]["reports_rejected"] == {} and first["n_train"] == 60
    assert second["nodes"]["rejected_nodes"] == {"1001": "not-owner", "1003": "user-count"}
    assert second["nodes"]["reports_accepted"] == 9 and second["n_train"] == 45  # 1002 kept, 1001/1003/1004 out


def test_claims_beyond_the_declared_users_are_rejected_from_the_first_report(dataset, tmp_path):
    """A node that claims a user it did not declare at sign-up (a node dead from the start)."""
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=5)
    dead = load_node_file(files.node_files[4])

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type != "evaluate.cells":
            return reply
        if node_id == 1004:
            return None
        if node_id == 1003:
            r = _arrays(reply)
            return _reply(msg, report=record_of(
                user_ids=np.append(r["user_ids"], dead.user_ids[0]), X=np.vstack([r["X"], dead.X[:1]]),
                a=np.append(r["a"], dead.a[0]), labels=np.hstack([r["labels"], r["labels"][:, :1]])))
        return reply

    (r,) = run_in_process(files, rounds=1, tamper=tamper)["rounds"]
    assert r["nodes"]["rejected_nodes"] == {"1003": "user-count"} and r["n_train"] == 50


def test_a_reported_one_to_zero_change_is_trained_as_zero(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=10)
    y0 = load_node_file(files.node_files[0]).y
    ones = np.flatnonzero(y0 == 1)[:2]

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type != "evaluate.cells" or node_id != 1000:
            return reply
        r = _arrays(reply)
        labels = np.array(r["labels"], copy=True)
        labels[3, ones] = 0  # cell 2 reports two users' 1 as 0
        return _reply(msg, report=record_of(**{**r, "labels": labels}))

    honest = run_in_process(files, rounds=1)["rounds"][0]
    (r,) = run_in_process(files, rounds=1, tamper=tamper)["rounds"]
    assert r["flips_1_to_0"][2] == 2 and sum(r["flips_1_to_0"]) == 2
    assert r["flips_0_to_1"] == honest["flips_0_to_1"] == honest["flips"]
    assert r["flips"][2] == honest["flips"][2] + 2
    labels = np.load(tmp_path / "labels.npz")["labels"]
    assert (labels[3] != labels[0]).sum() == r["flips"][2]
    assert r["metrics"][3] != honest["metrics"][3]


def test_train_cells_trains_the_reported_labels_in_both_directions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(np.int8)
    test = Held(X, y, (X[:, 1] > 0).astype(np.int8))
    down = y.copy()
    down[np.flatnonzero(y == 1)[:15]] = 0  # 1 -> 0 only
    up = y.copy()
    up[np.flatnonzero(y == 0)[:15]] = 1
    est = make_estimator("logistic-regression", {}, random_state=0)
    _, (m_down, m_up) = train_cells(est, X, y, [("c", down), ("d", up)], test, warm=False, as_labels=True)
    assert m_down == evaluate(Firm(est).fit(X, down), test) and m_up == evaluate(Firm(est).fit(X, up), test)
    assert m_down != m_up
    # Flips (the engine's form) and the same labels as reported give the same metrics.
    flips = up != y
    _, (by_flips,) = train_cells(est, X, y, [("d", flips)], test)
    _, (by_labels,) = train_cells(est, X, y, [("d", up)], test, as_labels=True)
    assert by_flips == by_labels

"""The ServerApp against in-process nodes: faulty nodes are skipped and counted, rounds complete."""

import json

import numpy as np
import pytest
from flwr.app import Error, Message

from agents.node import load_node_file
from agents.protocol import arrays_of, record_of
from server.server_app import RunSettings, run_rounds
from server.training import evaluate
from server.waves import wait_for_nodes
from simulations import engine
from simulations.flower.files import prepare_run
from simulations.flower.inprocess import InProcessGrid, run_in_process
from simulations.scenario import Scenario
from simulations.state import build_world

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6), collective__budgets=(0.5, 1.0),
    engine__n_jobs=1, collective__validation=0.0,
)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


def _corrupt(arrays_change):
    """A tamper hook replacing a node's report with a changed copy."""

    def change(msg, reply):
        arrays = arrays_of(reply.content["report"])
        arrays_change(arrays)
        reply.content["report"] = record_of(**arrays)
        return reply

    return change


def test_faulty_nodes_are_rejected_or_skipped_and_the_round_completes(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=5)  # 12 user nodes + coordinator
    stolen = load_node_file(files.node_files[3]).user_ids

    def steal(arrays):  # node 2 claims node 3's users: they are node 3's since sign-up
        arrays["user_ids"] = stolen

    faults = {
        1000: _corrupt(lambda r: r["X"].__setitem__((0, 0), np.nan)),
        1001: _corrupt(lambda r: r["labels"].__setitem__((1, 0), 2)),
        1002: _corrupt(steal),
        1004: lambda msg, reply: Message(Error(code=2, reason="device crashed"), reply_to=msg),
        1005: lambda msg, reply: None,  # never answers
    }

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type != "evaluate.cells":
            return reply
        return faults[node_id](msg, reply) if node_id in faults else reply

    grid = InProcessGrid([{"partition-id": i} for i in range(files.n_nodes)],
                         {"node-data-dir": str(files.node_data_dir)}, tamper=tamper)
    results = run_rounds(grid, RunSettings(tmp_path, rounds=2, expected_nodes=files.n_nodes, node_wait=0, timeout=1,
                                           mode="evaluate"))

    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for r in results["rounds"]:
        assert r["nodes"]["reports_rejected"] == {"non-finite": 1, "labels": 1, "not-owner": 1}
        assert r["nodes"]["rejected_nodes"] == {"1000": "non-finite", "1001": "labels", "1002": "not-owner"}
        assert r["messages"]["evaluate.cells"] == {"sent": 12, "ok": 10, "errors": 1, "timeouts": 1}
        assert r["nodes"]["reports_accepted"] == 7  # the owner keeps its users
        assert r["n_train"] == 35  # 7 clean nodes x 5 users
        assert all(np.isfinite(m["error"]) for m in r["metrics"])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["rounds"][1]["nodes"] == results["rounds"][1]["nodes"]
    labels = np.load(tmp_path / "labels.npz")
    assert labels["labels"].shape == (1 + 2 * 2 * 2, 35)


def test_firm_trains_on_the_accepted_reports_only(dataset, tmp_path):
    """With one node dropped, the metrics are the engine's firm trained on the remaining users."""
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=10)
    drop = lambda node_id, msg, reply: None if (node_id == 1000 and msg.metadata.message_type == "evaluate.cells") else reply
    results = run_in_process(files, rounds=1, tamper=drop)
    r = results["rounds"][0]
    assert r["n_train"] == 50 and r["messages"]["evaluate.cells"]["timeouts"] == 1

    from server.firm import Firm, make_estimator

    world = build_world(TOY, dataset, 0)
    p = world.prepared
    keep = slice(10, None)  # node 0 held the first 10 users in engine order
    est = make_estimator("logistic-regression", {}, random_state=world.firm_seed)
    base = Firm(est).fit(p.X_train[keep], p.y_train[keep])
    assert r["metrics"][0] == evaluate(base, world.test)


def test_without_a_coordinator_nobody_relabels(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=20)
    coordinator = 1000 + files.n_nodes - 1

    def mute(node_id, msg, reply):
        return None if node_id == coordinator and msg.metadata.message_type == "query.coordinate" else reply

    results = run_in_process(files, rounds=1, tamper=mute)
    r = results["rounds"][0]
    assert r["flips"] == [0] * 8 and r["coalition"] == {}
    assert r["messages"]["query.coordinate"]["timeouts"] == 1
    assert all(m == r["metrics"][0] for m in r["metrics"])  # every cell is the base firm


class _SlowGrid:
    def __init__(self):
        self.calls = 0

    def get_node_ids(self):
        self.calls += 1
        return list(range(min(self.calls, 3)))


def test_wait_for_nodes_polls_until_all_registered_or_deadline():
    assert wait_for_nodes(_SlowGrid(), 3, wait=5, poll=0.001) == [0, 1, 2]
    assert wait_for_nodes(_SlowGrid(), 10, wait=0.05, poll=0.01) == [0, 1, 2]


def test_run_settings_from_run_config(tmp_path):
    s = RunSettings.from_run_config({"run-dir": str(tmp_path), "rounds": 3, "expected-nodes": 4, "round-timeout": 9})
    assert (s.rounds, s.expected_nodes, s.timeout) == (3, 4, 9.0)
    with pytest.raises(ValueError, match="run-dir"):
        RunSettings.from_run_config({})


def test_skip_empty_inbox_scans_only_skips_nodes_without_messages():
    """The simulation speed-up wraps Flower's in-memory store; deliveries must not change."""
    import threading
    from types import SimpleNamespace

    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    from server.waves import skip_empty_inbox_scans

    assert skip_empty_inbox_scans(SimpleNamespace()) is False  # not a simulation grid: untouched

    state = InMemoryLinkState.__new__(InMemoryLinkState)  # the store's fields only, no SuperLink
    state.lock, state.message_ins_store, scans = threading.RLock(), {}, []

    def full_scan(node_id, limit, *, run_id=None):
        scans.append(node_id)
        out = [m for m in state.message_ins_store.values()
               if m.metadata.dst_node_id == node_id and m.metadata.delivered_at == ""]
        for m in out:
            m.metadata.delivered_at = "now"
        return out

    def store(message):
        state.message_ins_store[len(state.message_ins_store)] = message
        return str(len(state.message_ins_store))

    state.get_message_ins, state.store_message_ins = full_scan, store
    grid = SimpleNamespace(state=state)
    assert skip_empty_inbox_scans(grid, refresh=3600) is True
    assert skip_empty_inbox_scans(grid) is True  # idempotent

    message = SimpleNamespace(metadata=SimpleNamespace(dst_node_id=7, delivered_at=""))
    assert state.get_message_ins(5, 1) == [] and scans == []  # empty inbox: no scan
    assert state.store_message_ins(message) == "1"
    assert state.get_message_ins(7, 1) == [message] and scans == [7]  # delivered through Flower's scan
    assert state.get_message_ins(7, 1) == [] and scans == [7]  # delivered: back to the cheap path

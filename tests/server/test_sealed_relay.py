"""The relay and the SuperLink operator see ciphertext only (in process, every relayed message recorded).

What a relayed message may carry in the clear is public by design: the node record of a
join reply (role, number of users, the coordinator's identity, the ids the node reports
for: the firm's own customers), the users each node registered, the round, the stage,
the plan (the grid: the firm's scenario), the firm's feature encoding and the
coordinator's public summary. Everything
else must be one sealed byte array, and no member's id, ticket or score may appear
anywhere in the bytes outside those public records.
"""

import struct

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.common.serde import recorddict_to_proto

from agents import sealing
from agents.node import load_node_file
from agents.protocol import Signal, record_of
from simulations import engine
from simulations.flower.files import prepare_run, results_frame
from simulations.flower.inprocess import run_in_process
from simulations.scenario import Scenario
from simulations.state import build_world

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-label", "random"), collective__alphas=(0.3, 1.0), collective__budgets=(0.5, 1.0),
    engine__n_jobs=1, collective__validation=0.0,
)
PUBLIC = {"node", "registered", "round", "stage", "plan", "summary",  # records readable by design
          "encoding"}  # the firm's feature encoding, sent to the nodes
CLEAR_ONLY = {"node", "registered", "summary"}  # public, and may name customers or a threshold score


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


@pytest.fixture(scope="module")
def world(dataset):
    return build_world(TOY, dataset, 0)


def _record_everything(log):
    """A tamper hook that keeps (node, message type, what the relay sent, what the node answered)."""

    def tamper(node_id, msg, reply):
        log.append((node_id, msg.metadata.message_type, msg.content, reply.content if not reply.has_error() else None))
        return reply

    return tamper


def _member_secrets(world):
    """Every minority user's id, both tickets and its score by every method (a superset of what
    the members send), as the byte strings and text that must not travel in the clear."""
    minority = np.flatnonzero(world.minority)
    params = TOY.collective.scorer_params()
    scores = np.concatenate([world.scores(m, minority, params.get(m)) for m in TOY.collective.methods])
    floats = np.concatenate([world.member_tickets[minority], world.tie_tickets[minority], scores])
    ids = world.user_ids[minority]
    # A value that is public anyway (zero, a round number, a grid value) proves nothing.
    public = {0.0, 1.0, 2.0, *TOY.collective.alphas, *map(float, TOY.collective.budgets)}
    needles = {struct.pack("<q", int(i)) for i in ids if float(i) not in public}
    needles |= {struct.pack("<d", float(v)) for v in floats if float(v) not in public}
    needles |= {repr(float(v)).encode() for v in floats if len(repr(float(v))) >= 8}
    needles |= {str(int(i)).encode("utf-32-le") for i in ids if int(i) >= 10}
    return needles, ids


def _haystacks(content):
    """Every record of a message that is not public by design: raw bytes of each array and config value."""
    for name, record in content.items():
        if name in CLEAR_ONLY:
            continue
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                yield name, key, array.numpy().tobytes()
        else:
            for key, value in record.items():
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, bytes):
                        yield name, key, v
                    elif isinstance(v, bool):
                        continue
                    elif isinstance(v, int):
                        yield name, key, struct.pack("<q", v) + str(v).encode()
                    elif isinstance(v, float):
                        yield name, key, struct.pack("<d", v) + repr(v).encode()
                    else:
                        yield name, key, str(v).encode("utf-8") + str(v).encode("utf-32-le")


@pytest.mark.parametrize("k", [1, 7])
def test_the_relay_sees_ciphertext_only(k, dataset, world, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=k)
    log = []
    results = run_in_process(files, rounds=2, tamper=_record_everything(log))
    assert sum(results["rounds"][0]["flips"]) > 0  # the collective did act
    needles, ids = _member_secrets(world)
    # The coalition's messages both ways, and what the relay sends with the collection
    # request (the coordinator's thresholds); the reports themselves go to the firm by design.
    relayed = [(n, t, c) for n, t, sent, got in log
               for c in ((sent, got) if t.startswith("query.") else (sent,)) if c is not None]
    assert {t for _, t, _ in relayed} >= {"query.join", "query.coordinate", "query.scores"}
    for node_id, message_type, content in relayed:
        for name, record in content.items():  # only public records and sealed byte arrays travel
            assert name in PUBLIC or sealing.is_sealed(record), (message_type, name)
        for name, key, raw in _haystacks(content):
            leaked = [n for n in needles if n in raw]
            assert not leaked, f"{message_type} from/to node {node_id}: {name}/{key} holds a member's secret"
        # Config values outside the public records name no member either.
        for name, record in content.items():
            if isinstance(record, ConfigRecord) and name not in CLEAR_ONLY | {"round"}:
                values = [v for value in record.values() for v in (value if isinstance(value, list) else [value])]
                assert not {v for v in values if isinstance(v, int) and not isinstance(v, bool)} & set(ids.tolist())

    # Sizes tell the relay a node's number of users, nothing else: candidates or not,
    # minority or not, every node with n users sends payloads of one size.
    n_users = {i + 1000: load_node_file(f).user_ids.size for i, f in enumerate(files.node_files[:-1])}
    for message_type, name in (("query.join", "join"), ("query.scores", "candidates")):
        sizes = {}
        for node_id, t, _, got in log:
            if t == message_type and node_id in n_users:
                size = recorddict_to_proto(got).ByteSize() if t == "query.scores" else len(sealing.blob_of(got[name]))
                sizes.setdefault(n_users[node_id], set()).add(size)
        assert sizes and all(len(s) == 1 for s in sizes.values()), (message_type, sizes)
    # ... and they were compared across nodes with different numbers of candidates.
    shards = [load_node_file(f) for f in files.node_files[:-1]]
    candidates = {int(((s.a == 1) & (s.y == 0)).sum()) for s in shards if s.user_ids.size == k}
    assert len(candidates) > 1


# ------------------------------------------------------------------ altered, replayed, forged


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """One seed's files at K = 1 (60 user nodes, then the coordinator) and its honest round."""
    files = prepare_run(TOY, 0, tmp_path_factory.mktemp("run"), dataset=dataset, agents_per_node=1)
    return files, run_in_process(files)["rounds"][0]


def _candidate_nodes(files):
    """Node ids of user nodes whose one user is a candidate (minority, y = 0: a member at alpha = 1)."""
    return [1000 + i for i, f in enumerate(files.node_files[:-1])
            if (lambda n: n.a[0] == 1 and n.y[0] == 0)(load_node_file(f))]


def _flipped(record):
    """The same sealed record with one bit of its blob flipped."""
    blob = bytearray(sealing.blob_of(record))
    blob[len(blob) // 2] ^= 1
    return sealing.sealed_record(bytes(blob))


def _replies(change):
    """A tamper hook applying ``change(node_id, message_type, stage, content)`` to every good reply."""

    def tamper(node_id, msg, reply):
        if not reply.has_error():
            stage = str(msg.content["stage"]["stage"]) if "stage" in msg.content else ""
            change(node_id, msg.metadata.message_type, stage, reply.content)
        return reply

    return tamper


def _completed(got):
    assert got["metrics"] is not None and got["n_train"] == 60 and got["errors"] == []


def test_an_altered_or_replayed_member_payload_is_dropped_and_counted(run):
    files, honest = run
    x, y = _candidate_nodes(files)[:2]

    def flip_join(node_id, t, stage, content):
        if node_id == x and t == "query.join":
            content["join"] = _flipped(content["join"])

    got = run_in_process(files, tamper=_replies(flip_join))["rounds"][0]
    # x never joined, so its candidate is not one either.
    assert got["coalition"]["dropped"] == {"join": {"sealed": 1}, "scores": {"not-joined": 1}}
    assert got["coalition"]["n_members"][-1] == honest["coalition"]["n_members"][-1] - 1
    _completed(got)

    kept = {}

    def join_as_scores(node_id, t, stage, content):  # x's join blob sent again as its scores
        if node_id == x and t == "query.join":
            kept["join"] = content["join"]
        if node_id == x and t == "query.scores":
            content["candidates"] = kept["join"]

    got = run_in_process(files, tamper=_replies(join_as_scores))["rounds"][0]
    assert got["coalition"]["dropped"] == {"scores": {"sealed": 1}}
    assert got["coalition"]["pool_size"][-1] == honest["coalition"]["pool_size"][-1] - 1
    _completed(got)

    def y_sends_x_scores(node_id, t, stage, content):  # a blob moved to another node's slot
        if t == "query.scores" and node_id in (x, y):
            kept[node_id] = content["candidates"]
            if y in kept and x in kept:
                content["candidates"] = kept[x]

    got = run_in_process(files, tamper=_replies(y_sends_x_scores))["rounds"][0]
    assert got["coalition"]["dropped"] == {"scores": {"sealed": 1}}
    _completed(got)


def test_the_relay_can_neither_alter_nor_forge_the_coordinators_answer(run):
    """Users act only on thresholds sealed by the coordinator for this round and plan:
    anything else means nobody flips, and the round completes."""
    files, honest = run
    assert sum(honest["flips"]) > 0
    grid_config = None

    def everybody_flips(node_id, t, stage, content):
        if t == "query.coordinate" and stage == "thresholds":
            n = len(content["summary"]["score"].numpy())
            low = np.full(n, -1e300)  # every member reaches it
            forged = Signal(np.full(2, 2.0), low, low, *[np.zeros(k, dtype=np.int64) for k in (2, n, n)])
            content["thresholds"] = record_of(**forged.decision_arrays())

    def flip_thresholds(node_id, t, stage, content):
        if t == "query.coordinate" and stage == "thresholds":
            content["thresholds"] = _flipped(content["thresholds"])

    def other_plan(node_id, t, stage, content):  # the same thresholds, said to be for other budgets
        nonlocal grid_config
        if t == "query.coordinate" and stage == "thresholds":
            plan = dict(content["plan"])
            plan["budgets"] = list(reversed(plan["budgets"]))
            content["plan"] = ConfigRecord(plan)
            grid_config = plan

    def flip_cutoffs(node_id, t, stage, content):  # users cannot tell who is a candidate: nobody is
        if t == "query.coordinate" and stage == "cutoffs":
            content["cutoffs"] = _flipped(content["cutoffs"])

    for change in (everybody_flips, flip_thresholds, other_plan, flip_cutoffs):
        got = run_in_process(files, tamper=_replies(change))["rounds"][0]
        _completed(got)
        assert sum(got["flips"]) == 0, change.__name__
        assert got["metrics"][1:] == [got["metrics"][0]] * (len(got["metrics"]) - 1)  # every cell = nobody flips
        if change is flip_cutoffs:
            assert got["coalition"]["pool_size"] == [0] * len(got["flips"])
        else:
            assert got["coalition"] == honest["coalition"]  # the coordinator's own view is unchanged
    assert grid_config is not None


# ------------------------------------------------------------------ same results


@pytest.mark.parametrize("sealed", [True, False])
def test_sealed_and_plain_runs_give_the_engines_table(sealed, dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=10, _sealed=sealed)
    coordinator = load_node_file(files.node_files[-1])
    assert coordinator.sealed is sealed and load_node_file(files.node_files[0]).sealed is sealed
    results = run_in_process(files, rounds=2)
    reference = engine.run_seed(TOY, 0, dataset=dataset)
    cols = [c for c in reference.columns if c != "backend"]
    for round_ in (0, 1):
        frame = results_frame(TOY, dataset, 0, results, round_=round_)
        pd.testing.assert_frame_equal(frame[cols], reference[cols], check_exact=True)

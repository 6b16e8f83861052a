"""The coordinator verifies what members send: recomputed tickets, finite scores, one claim per
user id (first claimant), claims bounded by the users a node registered; drops counted by reason."""

import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from agents import client_app as ca
from agents import sealing
from agents.decision import user_tickets
from agents.node import load_node_file
from agents.protocol import arrays_of
from simulations import engine
from simulations.flower.files import prepare_run
from simulations.scenario import Scenario

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 1.0), collective__budgets=(0.5, 1.0),
    engine__n_jobs=1, collective__validation=0.0,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return prepare_run(TOY, 0, tmp_path_factory.mktemp("run"), dataset=engine.load_data(TOY, seed=0),
                       agents_per_node=10)


def _message(message_type, content, round_=1, node=7):
    content["round"] = ConfigRecord({"round": round_})
    md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=1, dst_node_id=node,
                  reply_to_message_id="", group_id=str(round_), created_at=time.time(), ttl=60.0,
                  message_type=message_type)
    return Message(content, metadata=md)


def _ctx(path):
    return Context(run_id=1, node_id=7, node_config={"data-path": str(path)}, state=RecordDict(), run_config={})


def _context(files, kind, name, round_=1):
    users = load_node_file(files.node_files[0])
    return sealing.context(kind, run=users.coordinator_digest, role="users", round_=round_, node=name)


def _open(files, kind, name, record):
    """What the coordinator reads of a member's sealed payload (opened with its private key)."""
    private = load_node_file(files.node_files[-1]).private_key
    return sealing.unpadded(sealing.unpack(sealing.open_from(private, sealing.blob_of(record),
                                                             _context(files, kind, name))))


def _seal(files, kind, name, arrays):
    """A member node's payload as it sends it: whatever arrays it chooses, sealed to the coordinator."""
    slots = max(np.shape(v)[-1] for v in arrays.values())
    public = load_node_file(files.node_files[0]).coordinator_key
    return sealing.sealed_record(sealing.seal_to(public, sealing.pack(sealing.padded(arrays, slots)),
                                                 _context(files, kind, name)))


def _joins(files):
    """Each user node's honest join record (opened) and registered users, by node name."""
    out = {}
    for i, path in enumerate(files.node_files[:-1]):
        reply = ca.app(_message("query.join", RecordDict(), node=100 + i), _ctx(path)).content
        out[str(100 + i)] = (_open(files, "query.join", str(100 + i), reply["join"]), int(reply["node"]["n_users"]))
    return out


def _cutoffs(files, coord_ctx, joins, registered=None):
    content = RecordDict({"stage": ConfigRecord({"stage": "cutoffs"})})
    for name, (arrays, _) in joins.items():
        content[f"member-{name}"] = _seal(files, "query.join", name, arrays)
    registered = registered if registered is not None else {name: n for name, (_, n) in joins.items()}
    content["registered"] = ConfigRecord(registered)
    return ca.app(_message("query.coordinate", content), coord_ctx).content


def _thresholds(files, coord_ctx, candidates):
    content = RecordDict({"stage": ConfigRecord({"stage": "thresholds"})})
    for name, arrays in candidates.items():
        content[f"member-{name}"] = _seal(files, "query.scores", name, arrays)
    reply = ca.app(_message("query.coordinate", content), coord_ctx).content
    summary = arrays_of(reply["summary"])
    dropped = {k[len("dropped:"):]: int(v[0]) for k, v in summary.items() if k.startswith("dropped:")}
    return summary, dropped


def _candidates(files, joins):
    """Every member with y = 0 as its node would send it (all minority users are members at alpha 1)."""
    out = {}
    for i, path in enumerate(files.node_files[:-1]):
        node = load_node_file(path)
        c = np.flatnonzero((node.a == 1) & (node.y == 0))
        out[str(100 + i)] = dict(user_ids=node.user_ids[c], member_tickets=node.member_tickets[c],
                                 tie_tickets=node.tie_tickets[c], scores=np.vstack([np.linspace(0, 1, c.size)] * 2))
    return out


def test_honest_members_are_all_kept(files):
    joins = _joins(files)
    coord = _ctx(files.node_files[-1])
    _cutoffs(files, coord, joins)
    summary, dropped = _thresholds(files, coord, _candidates(files, joins))
    n_minority = sum(a["user_ids"].size for a, _ in joins.values())
    assert summary["n_members"][-1] == n_minority and dropped == {}


def test_forged_duplicate_and_excess_claims_are_dropped_by_reason(files):
    joins = _joins(files)
    key = load_node_file(files.node_files[0]).membership_key
    first, second = "100", "101"
    a, n = joins[first]
    b, _ = joins[second]
    forged_ids = 50_000 + np.arange(2000)
    joins[first] = (dict(user_ids=np.concatenate([a["user_ids"], forged_ids, b["user_ids"][:1]]),
                         member_tickets=np.concatenate([a["member_tickets"], np.full(2000, 1e-6),
                                                        b["member_tickets"][:1]])), n)
    # The next node's first user was claimed first by node 100: it counts once, for node 100.
    valid_extra = 90_000 + np.arange(n)  # correct tickets (the keys are public among users) beyond the bound
    joins[second] = (dict(user_ids=np.concatenate([b["user_ids"], valid_extra]),
                          member_tickets=np.concatenate([b["member_tickets"], user_tickets(valid_extra, key)])), n)
    joins["999"] = (dict(user_ids=np.array([7]), member_tickets=user_tickets(np.array([7]), key)), 1)
    registered = {name: m for name, (_, m) in joins.items() if name != "999"}  # 999 never registered
    joins["bad"] = (dict(user_ids=np.array([-1.5]), member_tickets=np.array([0.1])), 1)
    coord = _ctx(files.node_files[-1])
    _cutoffs(files, coord, joins, registered=registered)
    summary, dropped = _thresholds(files, coord, {})
    minority = sum(a["user_ids"].size for a, _ in _joins(files).values())
    mb = b["user_ids"].size
    assert dropped == {"join:ticket": 2000, "join:duplicate": 1, "join:unregistered": 1, "join:malformed": 1,
                       "join:over-claim": mb - 1}
    # What is left is the residual the bound allows: node 101 registered n users, mb of them
    # minority; it can add up to n - (its remaining mb - 1) invented members with correct tickets.
    assert summary["n_members"][-1] == minority + n - (mb - 1)


def test_candidates_are_checked_too(files):
    joins = _joins(files)
    coord = _ctx(files.node_files[-1])
    _cutoffs(files, coord, joins)
    cands = _candidates(files, joins)
    name = next(k for k, c in cands.items() if c["user_ids"].size >= 3)
    c = cands[name]
    c["scores"][0, 0] = np.nan  # candidate 0: non-finite
    c["scores"][1, 1] = np.inf  # candidate 1: non-finite
    c["tie_tickets"][2] = 0.5  # candidate 2: a forged tie ticket
    other = next(k for k in cands if k != name)
    cands[other] = {k: np.concatenate([v, c[k][..., -1:]], axis=-1) for k, v in cands[other].items()}  # not its user
    cands["bad"] = dict(user_ids=np.array([1]), member_tickets=np.array([0.1]), tie_tickets=np.array([0.1]),
                        scores=np.zeros((3, 1)))  # wrong number of score rows
    summary, dropped = _thresholds(files, coord, cands)
    assert dropped == {"scores:non-finite": 2, "scores:ticket": 1, "scores:not-joined": 1, "scores:malformed": 1}
    pool = sum(x["user_ids"].size for k, x in _candidates(files, joins).items())
    assert summary["pool_size"][-1] == pool - 3  # the three dropped candidates left the pool
    # The second round repeats the same signal and the same counts.
    reply = ca.app(_message("query.coordinate", RecordDict({"stage": ConfigRecord({"stage": "repeat"})}), 2),
                   coord).content
    again = arrays_of(reply["summary"])
    assert int(again["dropped:scores:non-finite"][0]) == 2 and np.array_equal(again["score"], summary["score"])


def test_a_forged_claim_does_not_shadow_the_valid_one_that_follows(files):
    joins = _joins(files)
    name = next(k for k, (a, _) in joins.items() if a["user_ids"].size)
    a, n = joins[name]
    # The same id twice: first with a forged ticket, then with the right one.
    joins[name] = (dict(user_ids=np.concatenate([a["user_ids"][:1], a["user_ids"]]),
                        member_tickets=np.concatenate([[0.0], a["member_tickets"]])), n)
    coord = _ctx(files.node_files[-1])
    _cutoffs(files, coord, joins)
    summary, dropped = _thresholds(files, coord, {})
    assert dropped == {"join:ticket": 1}
    assert summary["n_members"][-1] == sum(x["user_ids"].size for x, _ in _joins(files).values())

"""A device's own raw records and the collective's invitation: read, checked, encoded by the node."""

import os
import stat
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from agents import client_app as ca
from agents.encoding import Encoding
from agents.errors import DataError
from agents.node import (
    Invitation,
    load_invitation,
    load_raw_records,
    node_from_raw,
    write_invitation,
)

# The firm's encoding of a small adult-like record: one categorical column, two numerical ones.
ENCODING = Encoding(categorical=["workclass"], categories=[["Private", "State-gov"]], numerical=["age", "hours"],
                    mean=[40.0, 38.5], scale=[12.0, 10.0])
HEADER = "user_id,age,workclass,hours,a,y\n"
GOOD = HEADER + "7,39,State-gov,40,1,0\n12,50,Private,13.5,0,1\n"
INVITE = dict(membership_key=2**64 - 1, tie_key=5, coordinator_digest="ab" * 32)


def write(tmp_path, text: str, name: str = "me.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_of_raw_records_becomes_the_firms_features(tmp_path):
    records = load_raw_records(write(tmp_path, GOOD))
    np.testing.assert_array_equal(records.user_ids, [7, 12])
    assert records.user_ids.dtype == np.int64 and records.a.dtype == records.y.dtype == np.int8
    np.testing.assert_array_equal(records.a, [1, 0])
    np.testing.assert_array_equal(records.y, [0, 1])
    assert sorted(records.columns) == ["age", "hours", "workclass"] and records.cf_proba is None
    invitation = load_invitation(write_invitation(tmp_path / "collective.json", **INVITE))
    node = node_from_raw(records, invitation, ENCODING)
    # by hand: one-hot in the firm's category order, then (x - mean) / scale
    np.testing.assert_array_equal(node.X, [[0, 1, (39 - 40) / 12, (40 - 38.5) / 10],
                                           [1, 0, (50 - 40) / 12, (13.5 - 38.5) / 10]])
    assert (node.membership_key, node.tie_key, node.coordinator_digest) == (2**64 - 1, 5, "ab" * 32)
    assert node.member_tickets.shape == (2,)


def test_json_records_read_as_the_same_csv(tmp_path):
    as_json = ('[{"user_id": 7, "age": 39, "workclass": "State-gov", "hours": 40, "a": 1, "y": 0},'
               ' {"user_id": 12, "age": 50.0, "workclass": "Private", "hours": 13.5, "a": 0, "y": 1}]')
    inv = Invitation(1, 2)
    a = node_from_raw(load_raw_records(write(tmp_path, as_json, "me.json")), inv, ENCODING)
    b = node_from_raw(load_raw_records(write(tmp_path, GOOD)), inv, ENCODING)
    np.testing.assert_array_equal(a.X, b.X)
    one = load_raw_records(write(tmp_path, '{"user_id": 3, "age": 1e-3, "workclass": "x", "hours": 1, "a": 0, '
                                           '"y": 1}', "one.json"))
    assert one.n_users == 1 and node_from_raw(one, inv, ENCODING).X[0, :2].tolist() == [0, 0]  # unknown category


@pytest.mark.parametrize("text, match", [
    # missing columns: the reserved ones when read, a feature column when encoded
    ("user_id,age,workclass,hours,y\n7,39,Private,40,0\n", r"missing column\(s\) 'a'"),
    ("age,workclass,hours,a,y\n39,Private,40,1,0\n", r"missing column\(s\) 'user_id'"),
    ("user_id,age,workclass,a,y\n7,39,Private,1,0\n", r"me.csv: missing column\(s\) 'hours'"),
    # a value that is not a number in a numerical column
    (GOOD + "13,old,Private,40,0,0\n", r"me.csv: column 'age' has a value that is not a number \(record 3: 'old'\)"),
    (GOOD + "13,nan,Private,40,0,0\n", r"me.csv: column 'age' has a non-finite value \(record 3"),
    # a and y must be 0/1
    (GOOD + "13,30,Private,40,female,0\n", r"column 'a' of record 3 is 'female'; allowed: 0 \(majority\) or 1"),
    (GOOD + "13,30,Private,40,1,2\n", r"column 'y' of record 3 is '2'; allowed: 0 or 1"),
    (GOOD + "13,30,Private,40,1,\n", r"column 'y' of record 3 is ''"),
    # a user id: a non-negative integer, once
    (GOOD + "7,30,Private,40,1,0\n", r"user_id 7 occurs 2 times; allowed: each user once"),
    (GOOD + "-1,30,Private,40,1,0\n", r"user_id of record 3 is '-1'; allowed: a non-negative integer"),
    (GOOD + "1.5,30,Private,40,1,0\n", r"user_id of record 3 is '1.5'"),
    # the file itself
    (GOOD + "13,30,Private\n", r"record 3 has 3 fields, the header 6"),
    (HEADER, r"no records"),
    ("", r"empty file"),
    ("user_id,age,age,workclass,hours,a,y\n", r"'age' occur more than once"),
])
def test_each_bad_file_is_one_clear_error(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        node_from_raw(load_raw_records(write(tmp_path, text)), Invitation(1, 2), ENCODING)


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "not a list of records"),
    ("{", "not valid JSON"),
    ('[{"user_id": 1, "a": 0, "y": 1}, {"user_id": 2, "a": 0}]', r"record 2 has other fields than the first record \('y'\)"),
    ('[{"user_id": 1, "a": true, "y": 1}]', "field 'a' is a boolean; allowed: a string or a number"),
])
def test_bad_json_files(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        load_raw_records(write(tmp_path, text, "me.json"))
    with pytest.raises(DataError, match="not a raw records file"):
        load_raw_records(write(tmp_path, GOOD, "me.txt"))
    (tmp_path / "latin.csv").write_bytes(HEADER.encode() + "7,39,Caf\xe9,40,1,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_raw_records(tmp_path / "latin.csv")


def test_the_invitation_round_trips_and_refuses_what_it_is_not(tmp_path):
    old = os.umask(0)
    try:
        path = write_invitation(tmp_path / "c" / "collective.json", **INVITE, coordinator_key=b"\x01" * 32,
                                collective_key=b"\x02" * 32)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds the collective's keys
    inv = load_invitation(path)
    assert inv == Invitation(2**64 - 1, 5, "ab" * 32, b"\x01" * 32, b"\x02" * 32)
    for bad in ('{"format": "collective-fairness/invitation-1", "membership_key": -1, "tie_key": 5}',
                '{"format": "collective-fairness/invitation-1", "membership_key": 1, "tie_key": 18446744073709551616}',
                '{"format": "collective-fairness/invitation-1", "membership_key": 1, "tie_key": 2, "coordinator": "x"}',
                '{"format": "collective-fairness/invitation-1", "membership_key": 1, "tie_key": 2, '
                '"coordinator_key": "' + "01" * 32 + '"}',  # a public key without the collective secret
                '{"membership_key": 1, "tie_key": 2}', "[]"):
        with pytest.raises(DataError, match="collective.json: (malformed|not an invitation)"):
            load_invitation(write(tmp_path, bad, "collective.json"))
    with pytest.raises(DataError, match="cannot read the invitation"):
        load_invitation(tmp_path / "missing.json")


# ------------------------------------------------------------------ the ClientApp's raw node


def _join(encoding: dict | None) -> Message:
    content = RecordDict({"encoding": ConfigRecord(encoding)} if encoding else {})
    content["round"] = ConfigRecord({"round": 1})
    md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=1, dst_node_id=7,
                  reply_to_message_id="", group_id="1", created_at=time.time(), ttl=60.0, message_type="query.join")
    return Message(content, metadata=md)


def test_a_raw_node_joins_once_the_firms_encoding_arrives(tmp_path):
    data = write(tmp_path, GOOD)
    invitation = write_invitation(tmp_path / "collective.json", **INVITE)
    context = Context(run_id=1, node_id=7, node_config={"data-path": str(data), "collective": str(invitation)},
                      state=RecordDict(), run_config={})
    with pytest.raises(DataError, match="none has arrived"):
        ca.app(_join(None), context)
    reply = ca.app(_join(ENCODING.to_config()), context)
    assert reply.content["node"]["n_users"] == 2 and reply.content["node"]["coordinator"] == "ab" * 32
    np.testing.assert_array_equal(reply.content["join"]["user_ids"].numpy(), [7])  # its minority user
    # remembered in the node's state: later messages (no encoding) see the same encoded node
    assert "encoding" in context.state
    np.testing.assert_array_equal(ca._node(context).X[:, 0], [0, 1])
    no_invitation = Context(run_id=1, node_id=7, node_config={"data-path": str(data)}, state=RecordDict(),
                            run_config={})
    with pytest.raises(DataError, match="needs the collective's invitation"):
        ca.app(_join(ENCODING.to_config()), no_invitation)
    bad = write(tmp_path, GOOD + "13,old,Private,40,0,0\n", "bad.csv")
    bad_context = Context(run_id=1, node_id=7, node_config={"data-path": str(bad), "collective": str(invitation)},
                          state=RecordDict(), run_config={})
    with pytest.raises(DataError, match="bad.csv: column 'age'"):
        ca.app(_join(ENCODING.to_config()), bad_context)

"""The firm's intake: malformed, non-finite, non-binary, unknown, out-of-schema, duplicated and stolen reports are rejected."""

import numpy as np
import pytest

from server.reports import REASONS, Registry, Schema, assemble, check_report, decode_report, max_elements, validate_reports


def report(ids, *, d=3, rows=2, rng=None):
    rng = rng or np.random.default_rng(0)
    ids = np.asarray(ids, dtype=np.int64)
    return {"user_ids": ids, "X": rng.normal(size=(ids.size, d)), "a": (ids % 2).astype(np.int8),
            "labels": (rng.random((rows, ids.size)) < 0.5).astype(np.int8)}


def check(r, known=None):
    return check_report(r, n_features=3, n_label_rows=2, known_ids=known)


def test_a_good_report_passes():
    assert check(report([1, 2, 3]), known=np.arange(10)) is None


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda r: r.pop("labels"), "missing"),
        (lambda r: r.update(X=r["X"][:, :2]), "shape"),
        (lambda r: r.update(X=r["X"][:2]), "shape"),
        (lambda r: r.update(labels=r["labels"][:1]), "shape"),
        (lambda r: r.update(a=r["a"][None, :]), "shape"),
        (lambda r: r.update(user_ids=r["user_ids"].astype(float)), "dtype"),
        (lambda r: r["X"].__setitem__((0, 0), np.nan), "non-finite"),
        (lambda r: r["X"].__setitem__((1, 2), np.inf), "non-finite"),
        (lambda r: r["labels"].__setitem__((0, 0), 2), "labels"),
        (lambda r: r.update(labels=r["labels"] - 1), "labels"),
        (lambda r: r.update(labels=np.full(r["labels"].shape, np.nan)), "labels"),
        (lambda r: r.update(a=np.array([0, 1, 3], dtype=np.int8)), "sensitive"),
        (lambda r: r.update(user_ids=np.array([1, 2, 99])), "unknown-user"),
        (lambda r: r.update(user_ids=np.array([1, 2, 2])), "duplicate-user"),
        (lambda r: r.update(X=r["X"] + 1j), "dtype"),
        (lambda r: r.update(X=r["X"].astype(str)), "dtype"),
        (lambda r: r.update(labels=r["labels"].astype(str)), "dtype"),
        (lambda r: r.update(a=r["a"].astype(object)), "dtype"),
        (lambda r: r["X"].__setitem__((0, 1), 1e300), "schema"),
    ],
)
def test_each_defect_is_named(change, reason):
    r = report([1, 2, 3])
    change(r)
    assert check_report(r, n_features=3, n_label_rows=2, known_ids=np.arange(10), schema=SCHEMA) == reason
    assert reason in REASONS


SCHEMA = Schema.from_test_set(np.random.default_rng(5).normal(size=(50, 3)))


def test_schema_is_the_test_sets_ranges_widened_ten_spans():
    X_test = np.array([[0.0, -2.0], [1.0, 3.0]])  # a one-hot column and a numeric one
    s = Schema.from_test_set(X_test)
    np.testing.assert_array_equal(s.lo, [-10.0, -52.0])
    np.testing.assert_array_equal(s.hi, [11.0, 53.0])
    assert s.accepts(np.array([[11.0, -52.0]])) and not s.accepts(np.array([[0.0, 53.5]]))
    assert check_report(report([1, 2, 3]), n_features=3, n_label_rows=2, schema=SCHEMA) is None


def test_float_labels_exactly_zero_or_one_are_accepted():
    r = report([1, 2])
    r["labels"] = r["labels"].astype(float)
    assert check(r) is None


def test_duplicates_across_nodes_reject_both_reports_whatever_the_order():
    good, a, b = report([1, 2]), report([3, 4]), report([4, 5])
    for order in ([(10, good), (11, a), (12, b)], [(12, b), (10, good), (11, a)]):
        intake = validate_reports(order, n_features=3, n_label_rows=2, known_ids=np.arange(10))
        assert [n for n, _ in intake.accepted] == [10]
        assert intake.rejected == {"duplicate-user": 2}
        assert intake.rejected_nodes == {11: "duplicate-user", 12: "duplicate-user"}


def test_rejections_are_counted_by_reason():
    bad_nan, bad_label = report([1]), report([2])
    bad_nan["X"][0, 0] = np.nan
    bad_label["labels"][0, 0] = 5
    intake = validate_reports([(1, bad_nan), (2, bad_label), (3, report([3])), (4, {"X": 1})],
                              n_features=3, n_label_rows=2)
    assert intake.rejected == {"non-finite": 1, "labels": 1, "missing": 1}
    assert intake.n_rejected == 3 and len(intake.accepted) == 1


def test_assemble_follows_the_customer_list_or_the_ids():
    # Mixed parities (so ``a`` is not constant) and different draws per report, so a
    # misaligned column shows.
    r1, r2 = report([7, 2], rng=np.random.default_rng(1)), report([4, 1], rng=np.random.default_rng(2))
    where = {int(u): (r, i) for r in (r1, r2) for i, u in enumerate(r["user_ids"])}

    def expected(ids):  # the table built row by row from the reports, by hand
        picked = [where[u] for u in ids]
        return {"user_ids": np.array(ids), "X": np.array([r["X"][i] for r, i in picked]),
                "a": np.array([r["a"][i] for r, i in picked]),
                "labels": np.array([r["labels"][:, i] for r, i in picked]).T}

    for table, ids in ((assemble([(1, r1), (2, r2)], order=[4, 7, 1, 2, 9]), [4, 7, 1, 2]),
                       (assemble([(1, r1), (2, r2)]), [1, 2, 4, 7])):
        want = expected(ids)
        np.testing.assert_array_equal(want["a"], np.array(ids) % 2)
        for key in ("user_ids", "X", "a", "labels"):
            np.testing.assert_array_equal(table[key], want[key], err_msg=key)
    assert assemble([]) is None  # nothing accepted: the round goes on without training


def _content(**arrays):
    from flwr.app import RecordDict

    from agents.protocol import record_of

    return RecordDict({"report": record_of(**arrays)})


def test_decode_report_names_every_malformed_record():
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    limit = max_elements(3, n_features=3, n_label_rows=2)
    assert limit == 3 * (3 + 2 + 2) + 1024
    good = report([1, 2, 3])
    arrays, reason = decode_report(_content(**good), limit=limit)
    assert reason is None and set(arrays) == set(good)
    assert decode_report(RecordDict(), limit=limit) == (None, "no-report")
    as_config = RecordDict({"report": ConfigRecord({"user_ids": [1, 2, 3], "X": [0.0] * 9})})
    assert decode_report(as_config, limit=limit) == (None, "record-type")
    assert decode_report(_content(**{**good, "junk": np.zeros(2)}), limit=limit) == (None, "extra-array")
    assert decode_report(_content(X=good["X"]), limit=limit) == (None, "missing")
    big = {**good, "X": np.zeros((3, 400))}  # the right names, too many elements
    assert decode_report(_content(**big), limit=limit) == (None, "size")
    # An object array (pickled bytes) is never unpickled.
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([1, "x", None], dtype=object), allow_pickle=True)
    record = ArrayRecord({k: Array(v) for k, v in good.items()})
    record["a"] = Array(dtype="object", shape=(3,), stype="numpy.ndarray", data=buf.getvalue())
    assert decode_report(RecordDict({"report": record}), limit=limit) == (None, "dtype")


def test_owners_keep_their_users_and_claimants_are_rejected():
    known, reg = np.arange(20), Registry()
    first = validate_reports([(10, report([1, 2])), (11, report([3, 4]))], n_features=3, n_label_rows=2,
                             known_ids=known, registry=reg)
    assert [n for n, _ in first.accepted] == [10, 11] and reg.owner == {1: 10, 2: 10, 3: 11, 4: 11}
    # Later: node 12 claims node 10's user; node 11 adds a user nobody owns (a dead node's);
    # node 10 is accepted whatever the order.
    for order in ([(12, report([2, 9])), (10, report([1, 2])), (11, report([3, 4, 5]))],
                  [(11, report([3, 4, 5])), (10, report([1, 2])), (12, report([2, 9]))]):
        later = validate_reports(order, n_features=3, n_label_rows=2, known_ids=known, registry=reg)
        assert [n for n, _ in later.accepted] == [10]
        assert later.rejected_nodes == {12: "not-owner", 11: "not-owner"}
    assert reg.owner == {1: 10, 2: 10, 3: 11, 4: 11}  # no claim changed an owner
    reg.declared[13] = 1  # node 13 declared one user at sign-up
    more = validate_reports([(13, report([7, 8]))], n_features=3, n_label_rows=2, known_ids=known, registry=reg)
    assert more.rejected_nodes == {13: "user-count"} and 7 not in reg.owner

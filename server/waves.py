"""Message waves: one message per node, sent and collected with a deadline.

The relay and the firm's intake both talk to nodes in waves: a
:class:`Wire` sends one message to each node of a wave, keeps the good
replies by node id and logs how many were sent, answered, errored or timed
out. Also here: waiting for nodes to connect, and a simulation-only fix for
Flower's in-memory message store (:func:`skip_empty_inbox_scans`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["Wire", "WaveLog", "copy_content", "skip_empty_inbox_scans", "wait_for_nodes"]


@dataclass
class WaveLog:
    """Per message type: how many were sent, answered, errored, timed out."""

    counts: dict = field(default_factory=dict)
    error_reasons: list = field(default_factory=list)

    seconds: dict = field(default_factory=dict)

    def add(self, message_type: str, sent: int, ok: int, errors: int, seconds: float = 0.0):
        c = self.counts.setdefault(message_type, Counter())
        c.update(sent=sent, ok=ok, errors=errors, timeouts=sent - ok - errors)
        self.seconds[message_type] = self.seconds.get(message_type, 0.0) + seconds


def wait_for_nodes(grid: Grid, expected: int, wait: float, *, poll: float = 0.2) -> list[int]:
    """Node ids once ``expected`` are connected (or whatever is there after ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if (expected and len(nodes) >= expected) or time.monotonic() >= deadline:
            return nodes
        time.sleep(poll)


@dataclass
class Wire:
    """The relay's link to the nodes for one round: every wave times out and is logged."""

    grid: Grid
    round: int
    timeout: float
    window: int = 0
    log: WaveLog = field(default_factory=WaveLog)
    keep: tuple = ()  # message types whose good replies are also kept in ``kept``
    kept: dict = field(default_factory=dict)

    def wave(self, contents: dict[int, RecordDict], message_type: str) -> dict[int, Message]:
        """Send one message per node and keep the good replies, by node id."""
        if not contents:
            return {}
        t0 = time.perf_counter()
        msgs = {}
        for node_id, content in contents.items():
            content["round"] = ConfigRecord({"round": self.round})
            msgs[node_id] = Message(content, dst_node_id=node_id, message_type=message_type,
                                    group_id=str(self.round), ttl=self.timeout + 60.0)
        replies = _push_and_pull(self.grid, list(msgs.values()), self.timeout, window=self.window)
        sent_ids = {m.metadata.message_id: n for n, m in msgs.items()}
        ok, errors = {}, 0
        for reply in replies:
            node_id = sent_ids.get(reply.metadata.reply_to_message_id)
            if node_id is None:
                continue
            if reply.has_error():
                errors += 1
                self.log.error_reasons.append(f"{message_type} node {node_id}: {str(reply.error.reason)[-300:]}")
            else:
                ok[node_id] = reply
        self.log.add(message_type, len(msgs), len(ok), errors, time.perf_counter() - t0)
        if message_type in self.keep:
            self.kept.setdefault(message_type, {}).update(ok)
        return ok


def _push_and_pull(grid: Grid, messages: list[Message], timeout: float, *, window: int = 0,
                   poll: float = 0.05) -> list[Message]:
    """``send_and_receive`` with a short poll and at most ``window`` messages in flight.

    Flower's deployment grid sleeps 3 s between pulls, which would dominate a
    round of short message waves; and the simulation's in-memory store scans
    every stored message for every node on each delivery sweep, so keeping the
    store small keeps a wave over 1,000 nodes linear instead of quadratic.
    Messages not pushed before the deadline count as timeouts.
    """
    queue, pending, replies = list(messages), set(), []
    window = window if window > 0 else len(queue)
    deadline = time.monotonic() + timeout
    while queue or pending:
        if queue and len(pending) < window and time.monotonic() < deadline:
            batch, queue = queue[: window - len(pending)], queue[window - len(pending):]
            pending.update(grid.push_messages(batch))
        got = list(grid.pull_messages(pending)) if pending else []
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if time.monotonic() >= deadline:
            break
        if not got:
            time.sleep(poll)
    return replies


def skip_empty_inbox_scans(grid, *, refresh: float = 1.0) -> bool:
    """Simulation only: answer the engine's inbox poll of a node with no message cheaply.

    flwr 1.42's simulation engine asks every node for its next message every
    0.1 s (``InMemoryLinkState.get_message_ins``), and each ask validates every
    stored message: O(nodes x messages) per sweep, ~13 ms per message at 1,000
    nodes, most of a round with one user per node. This wraps the run's own
    in-memory store (same process as the ServerApp) with a set of the nodes
    that have an undelivered message: those still go through Flower's method, so
    deliveries are unchanged; any other node gets ``[]`` at once (expired
    messages are then dropped by the next full call instead). The set is rebuilt
    from the store every ``refresh`` seconds, so a message stored some other way
    is delivered anyway. No-op on any other grid (deployment, tests). Returns
    whether the store is wrapped.
    """
    try:
        from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    except ImportError:  # another Flower layout: keep Flower's own scan
        return False
    state = getattr(grid, "state", None)
    if not isinstance(state, InMemoryLinkState) or not isinstance(getattr(state, "message_ins_store", None), dict):
        return False
    if getattr(state.get_message_ins, "_skips_empty_inbox", False):
        return True
    full_scan, store_one = state.get_message_ins, state.store_message_ins
    waiting: set = set()
    rebuilt = [0.0]

    def undelivered(node_id=None):  # call with state.lock held (every writer of the store holds it)
        return {m.metadata.dst_node_id for m in state.message_ins_store.values()
                if m.metadata.delivered_at == "" and (node_id is None or m.metadata.dst_node_id == node_id)}

    def store_message_ins(message):
        with state.lock:
            message_id = store_one(message)
            if message_id:
                waiting.add(message.metadata.dst_node_id)
        return message_id

    def get_message_ins(node_id, limit, *, run_id=None):
        if time.monotonic() - rebuilt[0] > refresh:
            with state.lock:
                waiting.clear()
                waiting.update(undelivered())
                rebuilt[0] = time.monotonic()
        if node_id not in waiting and (limit is None or limit >= 1):
            return []
        out = full_scan(node_id, limit, run_id=run_id)
        with state.lock:
            if not undelivered(node_id):
                waiting.discard(node_id)
        return out

    get_message_ins._skips_empty_inbox = True
    state.store_message_ins, state.get_message_ins = store_message_ins, get_message_ins
    return True


def copy_content(content: RecordDict, skip=()) -> RecordDict:
    """A message's records without the wave's own round stamp (and without ``skip``)."""
    return RecordDict({k: v for k, v in content.items() if k not in skip and k != "round"})

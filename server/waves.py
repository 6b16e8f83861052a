"""Message waves: one message per node, sent and collected with a deadline.

The relay and the firm's intake both talk to nodes in waves: a
:class:`Wire` sends one message to each node of a wave, keeps the good
replies by node id and logs how many were sent, answered, errored or timed
out. Also here: waiting for nodes to connect, and a simulation-only fix for
Flower's in-memory message store (:func:`skip_empty_inbox_scans`).

A dead node costs seconds, not the wave's timeout. During a wave each
message has its own deadline (``node_timeout`` seconds after it is pushed,
never past the wave's), and the grid's node list is read about once a
second: Flower's ``Grid.get_node_ids()`` lists only nodes the SuperLink
holds ONLINE (a SuperNode heartbeats; ``LinkState.get_nodes`` filters on
``NodeStatus.ONLINE``, and a node is tagged OFFLINE once its
``online_until`` -- last heartbeat + 2 x its 30 s interval -- has passed, or
at once when it shuts down cleanly). A node that leaves the list is given up
(counted as ``offline``, a subset of ``timeouts``); Flower itself also
answers a pull for a message to an offline node with a ``NODE_UNAVAILABLE``
error reply (counted as an error). The wave ends as soon as every message is
answered, errored or given up. A reply that arrives after its node was given
up is not used and is counted as ``late``. A node given up once is not
messaged again in the same round (:attr:`Wire.unresponsive`): a killed
SuperNode stays listed ONLINE for up to a minute, and would otherwise cost
one ``node_timeout`` per wave.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["PullResult", "Wire", "WaveLog", "copy_content", "skip_empty_inbox_scans", "wait_for_nodes"]


@dataclass
class WaveLog:
    """Per message type: how many were sent, answered, errored, timed out.

    ``offline`` (of the timeouts: nodes given up because Flower listed them
    offline), ``skipped`` (of the timeouts: nodes not messaged because they
    were given up earlier in the round) and ``late`` (replies that came after
    their node was given up) appear only when non-zero.
    """

    counts: dict = field(default_factory=dict)
    error_reasons: list = field(default_factory=list)

    seconds: dict = field(default_factory=dict)

    def add(self, message_type: str, sent: int, ok: int, errors: int, seconds: float = 0.0, *,
            offline: int = 0, late: int = 0, skipped: int = 0):
        c = self.counts.setdefault(message_type, Counter())
        c.update(sent=sent, ok=ok, errors=errors, timeouts=sent - ok - errors)
        c.update({k: v for k, v in (("offline", offline), ("late", late), ("skipped", skipped)) if v})
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
    node_timeout: float = 0.0  # seconds a node has to answer its message (0: the wave's timeout)
    # Nodes given up in this round (offline, past their deadline, or reported unavailable by Flower):
    # later waves of the round do not message them (counted as timeouts, ``skipped``); the next
    # round's Wire tries them again.
    unresponsive: set = field(default_factory=set)
    keep: tuple = ()  # message types whose good replies are also kept in ``kept``
    kept: dict = field(default_factory=dict)

    def wave(self, contents: dict[int, RecordDict], message_type: str) -> dict[int, Message]:
        """Send one message per node and keep the good replies, by node id."""
        if not contents:
            return {}
        t0 = time.perf_counter()
        msgs = {}
        skipped = [n for n in contents if n in self.unresponsive]
        for node_id, content in contents.items():
            if node_id in self.unresponsive:
                continue
            content["round"] = ConfigRecord({"round": self.round})
            msgs[node_id] = Message(content, dst_node_id=node_id, message_type=message_type,
                                    group_id=str(self.round), ttl=self.timeout + 60.0)
        wave = _push_and_pull(self.grid, list(msgs.values()), self.timeout, window=self.window,
                              node_timeout=self.node_timeout) if msgs else PullResult([])
        self.unresponsive.update(wave.gave_up)
        sent_ids = {m.metadata.message_id: n for n, m in msgs.items()}
        ok, errors = {}, 0
        for reply in wave.replies:
            node_id = sent_ids.get(reply.metadata.reply_to_message_id)
            if node_id is None or node_id in ok:
                continue
            if reply.has_error():
                errors += 1
                if not _from_node(reply, node_id):  # Flower's stand-in: node unavailable
                    self.unresponsive.add(node_id)
                self.log.error_reasons.append(f"{message_type} node {node_id}: {str(reply.error.reason)[-300:]}")
            else:
                ok[node_id] = reply
        self.log.add(message_type, len(msgs) + len(skipped), len(ok), errors, time.perf_counter() - t0,
                     offline=wave.offline, late=wave.late, skipped=len(skipped))
        if message_type in self.keep:
            self.kept.setdefault(message_type, {}).update(ok)
        return ok


@dataclass
class PullResult:
    """What one wave got back: the replies in time, and how many were given up or late."""

    replies: list
    offline: int = 0  # messages given up because their node left the grid's node list
    timed_out: int = 0  # messages given up at their own deadline (or never pushed before the wave's)
    late: int = 0  # replies to messages already given up (not in ``replies``)
    gave_up: set = field(default_factory=set)  # nodes given up (offline or past their own deadline)


def _node_ids(grid) -> set | None:
    """The nodes the grid lists as connected, or ``None`` when it cannot say."""
    try:
        return {int(n) for n in grid.get_node_ids()}
    except Exception:  # a grid without a node list, or a failed call: rely on deadlines
        return None


def _push_and_pull(grid: Grid, messages: list[Message], timeout: float, *, window: int = 0,
                   poll: float = 0.05, node_timeout: float = 0.0, liveness: float = 1.0) -> PullResult:
    """``send_and_receive`` with a short poll, per-message deadlines and node liveness.

    Flower's deployment grid sleeps 3 s between pulls, which would dominate a
    round of short message waves; and the simulation's in-memory store scans
    every stored message for every node on each delivery sweep, so keeping the
    store small keeps a wave over 1,000 nodes linear instead of quadratic
    (at most ``window`` messages in flight).

    Each message is given up at its own deadline, ``node_timeout`` seconds
    after it was pushed (0: the wave's), and never later than the wave's
    ``timeout``; messages not pushed before the wave's deadline time out too.
    Every ``liveness`` seconds the grid's node list is read: a message to a
    node no longer listed is given up at once (and one to an unlisted node is
    not pushed). Replies to given-up messages that still arrive during the
    wave, or at one last pull when it ends, are counted as ``late``.
    """
    queue, pending, replies = list(messages), {}, []  # pending: message id -> (node id, deadline)
    given_up: dict = {}  # message id -> node id, for messages no longer waited for
    out = PullResult(replies)
    window = window if window > 0 else len(queue)
    now = time.monotonic()
    deadline = now + timeout
    online, checked = _node_ids(grid), now
    while queue or pending:
        now = time.monotonic()
        if now - checked >= liveness:
            online, checked = _node_ids(grid), now
        if online is not None:  # give up on nodes Flower no longer lists
            for mid, (node_id, _) in list(pending.items()):
                if node_id not in online:
                    del pending[mid]
                    given_up[mid] = node_id
                    out.gave_up.add(node_id)
                    out.offline += 1
            if queue:
                alive = [m for m in queue if int(m.metadata.dst_node_id) in online]
                out.gave_up.update(int(m.metadata.dst_node_id) for m in queue if int(m.metadata.dst_node_id) not in online)
                out.offline += len(queue) - len(alive)
                queue = alive
        if queue and len(pending) < window and now < deadline:
            batch, queue = queue[: window - len(pending)], queue[window - len(pending):]
            node_deadline = min(deadline, now + node_timeout) if node_timeout > 0 else deadline
            for mid, msg in zip(grid.push_messages(batch), batch):
                pending[mid] = (int(msg.metadata.dst_node_id), node_deadline)
        asked = set(pending) | set(given_up)
        got = list(grid.pull_messages(asked)) if asked else []
        for reply in got:
            mid = reply.metadata.reply_to_message_id
            if pending.pop(mid, None) is not None:
                replies.append(reply)
            elif mid in given_up and _from_node(reply, given_up[mid]):
                del given_up[mid]
                out.late += 1
        now = time.monotonic()
        for mid, (node_id, node_deadline) in list(pending.items()):
            if now >= node_deadline:
                del pending[mid]
                given_up[mid] = node_id
                out.gave_up.add(node_id)
                out.timed_out += 1
        if now >= deadline:
            out.timed_out += len(queue)
            break
        if not got and (queue or pending):
            time.sleep(poll)
    if given_up:  # one last look for replies that came just after their deadline
        try:
            out.late += sum(1 for r in grid.pull_messages(set(given_up))
                            if _from_node(r, given_up.get(r.metadata.reply_to_message_id)))
        except Exception:
            pass
    return out


def _from_node(reply: Message, node_id) -> bool:
    """A reply sent by the node itself, not a stand-in from the SuperLink (node unavailable, expired)."""
    try:
        return node_id is not None and int(reply.metadata.src_node_id) == int(node_id)
    except Exception:
        return False


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

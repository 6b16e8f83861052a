"""The ServerApp against in-process ClientApps: no SuperLink, no Ray (tests, debugging)."""

from __future__ import annotations

import time
import uuid
from typing import Callable, Iterable

from agents.client_app import app as client_app
from server.server_app import RunSettings, run_rounds

from .files import RunFiles

__all__ = ["InProcessGrid", "run_in_process"]


class InProcessGrid:
    """A Flower ``Grid`` that runs the real ClientApp for each node in this process.

    No SuperLink, no Ray: for unit tests of the ServerApp and for debugging.
    ``tamper(node_id, message, reply)`` may return a changed reply, or ``None``
    to drop it (the ServerApp then sees a timeout). :meth:`kill` makes a node
    vanish from :meth:`get_node_ids` and never answer again (as a SuperNode the
    SuperLink has marked offline); ``delays[node_id] = seconds`` holds that
    node's replies back for that long after the push (a slow node).
    """

    def __init__(self, node_configs: Iterable[dict], run_config: dict, *, tamper: Callable | None = None, app=None):
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        # Messages take their run and sender ids from the process's task identity,
        # which the Flower runtime sets; here we are the SuperLink (node 1) of run 1.
        for attr in ("run_id", "task_id", "node_id"):
            if getattr(TaskIdentity, f"_{attr}") is None:
                setattr(TaskIdentity, attr, 1)
        self.app = app or client_app
        self.tamper = tamper
        self.contexts = {}
        for i, node_config in enumerate(node_configs):
            node_id = 1000 + i
            self.contexts[node_id] = Context(run_id=1, node_id=node_id, node_config=dict(node_config),
                                             state=RecordDict(), run_config=dict(run_config))
        self._replies = {}  # message id -> (time the reply may be pulled, reply)
        self.dead: set = set()
        self.delays: dict = {}

    # The Grid interface the ServerApp uses.
    def kill(self, node_id: int) -> None:
        self.dead.add(node_id)

    def get_node_ids(self):
        return [n for n in self.contexts if n not in self.dead]

    def push_messages(self, messages):
        from flwr.app import Error, Message

        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node_id = msg.metadata.dst_node_id
            ids.append(msg.metadata.message_id)
            if node_id in self.dead:
                continue
            try:
                reply = self.app(msg, self.contexts[node_id])
            except Exception as exc:  # a failing ClientApp answers with an error, as in Flower
                reply = Message(Error(code=2, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if self.tamper is not None:
                reply = self.tamper(node_id, msg, reply)
            if reply is not None:
                self._replies[msg.metadata.message_id] = (time.monotonic() + self.delays.get(node_id, 0.0), reply)
        return ids

    def pull_messages(self, message_ids):
        now = time.monotonic()
        ready = [i for i in list(message_ids) if i in self._replies and self._replies[i][0] <= now]
        return [self._replies.pop(i)[1] for i in ready]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(list(messages)))


def run_in_process(files: RunFiles, *, rounds: int = 1, tamper: Callable | None = None,
                   mode: str = "evaluate", consent: bool | None = None) -> dict:
    """Run the ServerApp against in-process nodes (no Flower runtime); ``mode`` as the run
    config's: ``"evaluate"`` (the experimenter's evaluator) or ``"deploy"`` (the firm only).
    ``consent``: raw device nodes answer the evaluator (node config ``evaluator=true``;
    default: when ``mode`` is ``"evaluate"``)."""
    consent = mode == "evaluate" if consent is None else bool(consent)
    # Nodes find .npz files as the simulation does (partition-id); raw device files by data-path
    # and the collective's invitation (collective), as a device's SuperNode does.
    node_configs = [files.node_config(i, evaluator=consent) if files.invitation is not None else
                    {"partition-id": i, "num-partitions": files.n_nodes} for i in range(files.n_nodes)]
    grid = InProcessGrid(node_configs, {"node-data-dir": str(files.node_data_dir)}, tamper=tamper)
    settings = RunSettings(run_dir=files.run_dir, rounds=rounds, expected_nodes=files.n_nodes, node_wait=0.0, timeout=1.0,
                           mode=mode)
    return run_rounds(grid, settings)


class InProcessDeployment:
    """Stands in for :class:`simulations.flower.deploy.Deployment` in tests: the same node
    files and run config, the nodes in this process (:func:`run_in_process`).
    ``evaluator``: the nodes' owners consent to answer the evaluator."""

    def __init__(self, files: RunFiles, workdir=None, *, evaluator: bool = False, **_security):
        self.files, self.evaluator = files, evaluator

    def __enter__(self) -> "InProcessDeployment":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def run(self, *, rounds: int, timeout: float, on_round=None, mode: str = "deploy") -> dict:
        return run_in_process(self.files, rounds=rounds, mode=mode, consent=self.evaluator)

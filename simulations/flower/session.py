"""A simulation SuperLink (and a Ray cluster) on 127.0.0.1, reused by every seed of a run."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import time
from pathlib import Path

from server.server_app import RUN_CONFIG

from .files import RoundWatch, RunFiles
from .processes import (
    FLOWER_ENV,
    FlwrProcesses,
    app_pyproject,
    config_args,
    flower_env,
    flwr_bin,
    free_port,
    results_complete,
    run_status,
    stop_process,
    wait_http_ok,
)

__all__ = ["FlowerSession", "close_sessions", "session_for"]


class FlowerSession(FlwrProcesses):
    """A simulation SuperLink (and, unless attached to a cluster, a Ray cluster) on 127.0.0.1.

    Started once, used for many runs (one per seed), stopped by :meth:`close`.
    All of Flower's state lives in ``workdir``.
    """

    def __init__(self, config=None, workdir=None, *, max_in_flight: int | None = None):
        self.config = config if config is not None else _default_config()
        # Messages in flight per wave: Flower's in-memory store is scanned for every
        # node on each delivery sweep, so a small window keeps waves over 1,000
        # nodes fast (measured: 32 in flight ~2x faster than all at once).
        self.max_in_flight = int(max_in_flight or max(32, 16 * int(self.config.num_cpus)))
        self.workdir = Path(workdir or Path.cwd() / ".flwr").resolve()
        self.home = self.workdir / "home"
        self.app_dir = self.workdir / "app"
        self.port = None
        self.superlink: subprocess.Popen | None = None
        self.owns_ray = False
        self.env = None

    # -- lifecycle
    def start(self) -> "FlowerSession":
        if self.superlink is not None:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        self.app_dir.mkdir(parents=True, exist_ok=True)
        (self.app_dir / "pyproject.toml").write_text(app_pyproject(), encoding="utf-8")
        env = flower_env(self.home)
        address = self.config.ray_address
        if address:
            env["RAY_ADDRESS"] = address
        else:
            env["RAY_ADDRESS"] = self._start_ray()
        self.env = env
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8",
        )
        log = open(self.workdir / "superlink.log", "ab")
        self.superlink = subprocess.Popen(
            [flwr_bin("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(self.port),
             "--disable-runtime-dependency-installation"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        try:
            wait_http_ok(f"http://127.0.0.1:{self.port}/health", time.monotonic() + 60, self.superlink)
        except BaseException:
            self.close()
            raise
        _SESSIONS.append(self)
        return self

    def _start_ray(self) -> str:
        """A Ray cluster owned by this process, reused by every run of the session."""
        for key, value in FLOWER_ENV.items():
            if key.startswith("RAY_"):
                os.environ.setdefault(key, value)
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=int(self.config.num_cpus), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False)
            self.owns_ray = True
        return ray.get_runtime_context().gcs_address

    def close(self) -> None:
        if self.superlink is not None:
            stop_process(self.superlink)
            self.superlink = None
        if self.owns_ray:
            import ray

            ray.shutdown()
            self.owns_ray = False
        if self in _SESSIONS:
            _SESSIONS.remove(self)

    # -- runs
    def run(self, files: RunFiles, *, rounds: int = 1, timeout: float | None = None, on_round=None) -> dict:
        """Run the app on ``files`` with one simulated node per file; returns results.json.
        ``on_round(line)`` hears about every round as the ServerApp finishes it."""
        self.start()
        timeout = float(timeout or self.config.timeout)
        results_path = files.run_dir / "results.json"
        results_path.unlink(missing_ok=True)
        run_config = {
            "run-dir": str(files.run_dir), "node-data-dir": str(files.node_data_dir), "rounds": int(rounds),
            "expected-nodes": files.n_nodes, "node-wait": RUN_CONFIG["node-wait"], "round-timeout": timeout,
            "mode": "evaluate",  # the experimenter's simulation: every cell, counterfactual rows included
            # A small in-memory message store keeps Flower's per-node delivery scan cheap.
            "max-in-flight": self.max_in_flight,
        }
        federation = {
            "num-supernodes": files.n_nodes,
            "client-resources-num-cpus": 1,  # one actor per Ray CPU
        }
        proc = self._flwr("run", ".", "sim", "--format", "json",
                          "--run-config", config_args(run_config),
                          "--federation-config", config_args(federation))
        try:
            run_id = json.loads(proc.stdout)["run-id"]
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"flwr run failed: {proc.stdout.strip()} {proc.stderr.strip()[-2000:]}") from None
        deadline = time.monotonic() + timeout * (3 * rounds + 2) + 300
        status = self.wait(run_id, deadline, results_path, watch=RoundWatch(results_path, rounds, on_round))
        if status == "finished:completed":
            self.wait(run_id, time.monotonic() + 60, None, status_every=0.5)  # its actors are gone too
        if not status.endswith("completed"):
            logs = self._flwr("log", str(run_id), "sim", "--show", timeout=60)
            tail = (logs.stdout + logs.stderr)[-3000:]
            raise RuntimeError(f"Flower run {run_id} ended as {status!r}; log tail:\n{tail}")
        return json.loads(results_path.read_text(encoding="utf-8"))

    def wait(self, run_id, deadline: float, results_path: Path | None = None, *, poll: float = 0.2,
             status_every: float = 10.0, watch: RoundWatch | None = None) -> str:
        """Wait until the ServerApp has written its final results or the run has ended.

        The results file is checked often (cheap); the run status, which costs a
        ``flwr`` process, only every ``status_every`` seconds to notice a crash.
        At the deadline the run is stopped.
        """
        status, next_status = "", time.monotonic() + status_every
        while time.monotonic() < deadline:
            if watch is not None:
                watch.poll()
            if results_path is not None and results_complete(results_path):
                if watch is not None:
                    watch.poll()
                return "finished:completed"
            if time.monotonic() >= next_status or (results_path is None and not status):
                status = run_status(self._flwr, "sim", run_id)
                next_status = time.monotonic() + status_every
                if status.startswith("finished"):
                    if results_path is None or results_complete(results_path):
                        return status
                    return status if not status.endswith("completed") else "finished:completed-without-results"
            time.sleep(poll)
        self._flwr("stop", str(run_id), "sim", timeout=60)
        return f"timed out ({status})"


_SESSIONS: list[FlowerSession] = []


def close_sessions() -> None:
    """Stop every SuperLink and Ray cluster this process started."""
    for session in list(_SESSIONS):
        session.close()


atexit.register(close_sessions)


def session_for(config, workdir=None) -> FlowerSession:
    for session in _SESSIONS:
        if session.config == config and session.workdir == Path(workdir or Path.cwd() / ".flwr").resolve():
            return session
    return FlowerSession(config, workdir).start()


def _default_config():
    from ..scenario import FlowerConfig

    return FlowerConfig()

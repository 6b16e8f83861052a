"""The Flower backend: users as Flower clients, the firm as a Flower server.

* :mod:`.files`      one seed's node files, the firm's file, and results -> tidy rows
* :mod:`.processes`  starting and stopping Flower's processes, the ``flwr`` CLI
* :mod:`.session`    a simulation SuperLink + Ray on 127.0.0.1, reused across seeds
* :mod:`.backend`    the ``flower`` backend (one seed = one ``flwr run``)
* :mod:`.deploy`     real ``flower-superlink`` + ``flower-supernode`` processes
* :mod:`.inprocess`  the ServerApp against in-process ClientApps (tests, debugging)

The apps themselves are :mod:`agents.client_app` and :mod:`server.server_app`.
"""

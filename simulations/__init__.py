"""Datasets, scenarios, engines (vectorised, Flower on Ray, deployment), sweeps,
reports and the ``collective-fairness`` command line."""

"""User-facing errors: one clear line naming what is wrong and what is allowed.

They live at the bottom of the import graph (``agents`` imports nothing else of
the project), so the collective, the firm and the simulator name bad input the
same way.

The CLI prints these without a traceback; both subclasses are also ``ValueError`` so
generic callers (and sklearn-style code) can catch them as such.
"""


class CollectiveFairnessError(Exception):
    """Base class of every error raised on bad user input or data."""


class ConfigError(CollectiveFairnessError, ValueError):
    """A configuration value (dataset name, option, scenario field) is not allowed."""


class DataError(CollectiveFairnessError, ValueError):
    """A data file is missing, corrupt, or does not contain what was asked for."""

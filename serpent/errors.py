"""The one exception type of the package.

Every error a user can cause (a bad config, a corrupt checkpoint, an empty corpus, a diverging chain) is raised as a
:class:`SerpentError` whose message says what was wrong and what to do about it.

>>> try:
...     raise SerpentError("corpus 'files:*.txt' matched no file; check the glob")
... except SerpentError as e:
...     print(e)
corpus 'files:*.txt' matched no file; check the glob
"""


class SerpentError(Exception):
    """An error the user can fix; the message says how."""


class ConfigError(SerpentError, ValueError):
    """A configuration field has a value that is not allowed."""


class CheckpointError(SerpentError):
    """A checkpoint file is missing, corrupt or from another model."""


class CorpusError(SerpentError):
    """A text source is empty, unreadable or unreachable."""


class DivergenceError(SerpentError, FloatingPointError):
    """An SGLD chain produced NaN/inf or its loss ran away."""

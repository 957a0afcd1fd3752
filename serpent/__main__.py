"""``python -m serpent``: see :mod:`serpent.cli`."""
import sys

from .cli import main

sys.exit(main())

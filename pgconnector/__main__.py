"""``python -m pgconnector`` is the ``pgconnector`` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m tripline.collector.cli``: the ``tripline`` command."""

import sys

from tripline.collector.cli import main

sys.exit(main())

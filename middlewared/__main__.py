"""``python -m middlewared``."""

import sys

from middlewared.cli import main

sys.exit(main())

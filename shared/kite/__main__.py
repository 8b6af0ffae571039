"""``python -m shared.kite --port N --api-key K --api-secret S --state-dir D``."""

import sys

from .server import main

sys.exit(main())

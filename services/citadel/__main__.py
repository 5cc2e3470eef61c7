"""Entry point for `python -m services.citadel`."""

import sys

from services.citadel.main import main

sys.exit(main())

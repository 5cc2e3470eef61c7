"""`python -m services.dashboard`: run the dashboard until SIGTERM or Ctrl-C."""

from __future__ import annotations

import sys

from services.dashboard.server import main

sys.exit(main())

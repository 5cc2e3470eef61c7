"""`python -m services.proxy`: run one sidecar."""

import sys

from services.proxy.main import main

sys.exit(main())

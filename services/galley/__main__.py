"""`python -m services.galley`: run the galley process."""

import sys

from services.galley.main import main

sys.exit(main())

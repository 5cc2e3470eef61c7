"""`python -m services.pilot`: run pilot from the command line."""

import sys

from services.pilot.main import main

sys.exit(main())

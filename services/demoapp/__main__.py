"""`python -m services.demoapp`: run one demo service."""

import sys

from services.demoapp.app import main

sys.exit(main())

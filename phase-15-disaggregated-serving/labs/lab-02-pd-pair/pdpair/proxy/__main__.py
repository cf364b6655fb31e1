"""``python -m pdpair.proxy``: see ``pdpair.proxy.cli``."""

import sys

from pdpair.proxy.cli import main

sys.exit(main())

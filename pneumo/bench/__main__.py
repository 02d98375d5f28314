"""``python -m pneumo.bench``: see pneumo.bench.run."""

import sys

from pneumo.bench.run import main

sys.exit(main())

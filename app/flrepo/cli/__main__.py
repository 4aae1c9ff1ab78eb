"""`python -m flrepo.cli`: the same as the `flrepo` command."""

import sys

from flrepo.cli.main import main

sys.exit(main())

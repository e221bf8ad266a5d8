"""`python -m zkv.bench ...`: the quorum suite without the `zkv` CLI (same flags as `zkv bench`)."""

import sys

from zkv.bench import main

sys.exit(main(sys.argv[1:]))

"""`python -m relay`: runs the execution relay until SIGTERM or SIGINT (`--help` lists flags)."""

import contextlib
import sys

from relay.relay import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())

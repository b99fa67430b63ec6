"""`python -m server`: start the portfolio manager."""

from server.app import main

raise SystemExit(main())

"""`scripts/portfolio`: the operator's command line, a client of the service (through the SDK,
and the raw stubs where the SDK has nothing yet) and a reader of the analysts' store.

Tables for people, `--json` for scripts; the exit code tells a script what happened (see
`portfolio_cli.__main__`).
"""

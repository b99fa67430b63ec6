"""One account's P&L report (HTML and PNG) from the service or the analysts' store:
`scripts/report --help`."""

"""The TWS API link that the service's reconciler and the execution relay share.

Both processes talk to TWS / IB Gateway through `ib_async`, and both must see the same
instrument ids and the same exact amounts, so the connection that keeps itself up
(`connection`), the contract map (`contracts`) and the one float-to-Decimal conversion
(`amounts`) live here once. This package imports `ib_async` and the standard library only:
the service (`server.broker.ib`) and the relay (`relay`, a client of the service) both depend
on it, and it on neither, so the relay needs nothing from `server` and `server` nothing from
`client`.
"""

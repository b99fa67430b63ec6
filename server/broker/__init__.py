"""Broker adapters: the service's edge toward brokers (IB through `ib_async`, and paper).

`IbBroker` and `PaperBroker` implement the application's `Broker` port for reconciliation.
The TWS connection and the contract map they use live in `tws`, shared with the execution relay
(`relay`), which is a client of the service and not part of it.
"""

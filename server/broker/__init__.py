"""Broker adapters: the service's edge toward brokers (IB through `ib_async`, and paper).

`IbBroker` and `PaperBroker` implement the application's `Broker` port; `relay` is the separate
process that streams IB executions and order statuses into the service.
"""

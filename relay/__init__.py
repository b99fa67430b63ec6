"""The execution relay: a process of its own beside TWS / IB Gateway, and a client of the service.

It streams IB executions and order statuses into `Ingest` through the SDK (`client`), and
reaches TWS through the link it shares with the service's reconciler (`tws`). It imports
nothing from `server`: it talks to the service over gRPC like any other caller.
"""

"""The gRPC adapter: the portfolio.v1 protocol over the application layer."""

"""The pure domain core: positions, P&L, attribution. No I/O, no gRPC, no storage."""

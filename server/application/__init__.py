"""The application layer: the service's use cases over the domain, free of any transport."""

"""Services: the use cases. Each takes ports and the clock in its constructor."""

"""Usage: tokens, cost and carbon of every model call, recorded exactly once."""

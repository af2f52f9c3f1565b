"""Rating every path of a block against the population centre, and choosing architectures."""

"""One module per workload family; each writes an equivalent project for every tool."""

"""The pipeline on a Dask cluster (`--scheduler`, `UserClusterer(scheduler=...)`): user partitions, global
state by reductions, no scheduler of our own. `cluster` and `engine` hold what differs by device."""

"""`python -m gpuclust`: the same as the `gpuclust` command."""

from gpuclust.cli.entry import main

main()

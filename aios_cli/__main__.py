"""`python -m aios_cli`: the `aios` command, for launchers that start a Python module
(`torchrun --nproc-per-node 2 -m aios_cli run --tp 2`)."""

from .entry import main

if __name__ == "__main__":
    main()

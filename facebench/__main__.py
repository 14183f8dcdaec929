"""``python -m facebench``: the command line, as the ``facebench`` script."""

from facebench.cli import main

if __name__ == "__main__":
    main()

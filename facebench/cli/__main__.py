"""``python -m facebench.cli``: the same command line as ``python -m facebench``."""

from facebench.cli import main

if __name__ == "__main__":
    main()

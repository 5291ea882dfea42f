"""`python -m app.cli`: the `rlhf` command, run by the tests and by `rlhf serve --with-worker`."""

from app.cli import main

if __name__ == "__main__":
    main()

"""`python -m embstore …` runs the `embstore` command."""

from embstore_cli.app import main

if __name__ == "__main__":
    main()

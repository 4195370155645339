"""`python -m meshsearch_cli`: the `meshsearch` command."""

from meshsearch_cli.main import main

if __name__ == "__main__":
    main()

from meshsearch_common.cli import main

main()

from resgrad.cli import main

main()

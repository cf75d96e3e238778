from ilias.cli import main

main()

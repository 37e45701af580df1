from ferkit.cli.app import main

main()

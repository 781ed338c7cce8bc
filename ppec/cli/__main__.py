from ppec.cli.main import main

main()

from ppec.cli.entry import run

run()

from watchrun.cli import main

main()

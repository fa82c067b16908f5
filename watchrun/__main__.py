from watchrun.entry import main

main()

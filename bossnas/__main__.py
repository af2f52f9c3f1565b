from bossnas.entry import main

main()

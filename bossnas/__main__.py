from bossnas.cli import main

main()

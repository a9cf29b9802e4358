from optline.entrypoints.cli import main

main()

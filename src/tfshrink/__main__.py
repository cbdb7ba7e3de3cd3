from tfshrink.cli import main

main()

from attnlab.data.real.build import main

main()

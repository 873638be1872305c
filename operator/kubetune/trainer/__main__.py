from kubetune.trainer.run import main

main()

from embed_svc.server import main

main()

from ingest_svc.server import main

main()

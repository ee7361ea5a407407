"""`python -m gateway`, the same as `photostore serve gateway`."""
from gateway.server import main

main()

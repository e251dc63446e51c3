"""`python -m mbe_gateway`: the same command as `mbe-gateway`."""

from mbe_gateway.cli import main

if __name__ == "__main__":
    main()

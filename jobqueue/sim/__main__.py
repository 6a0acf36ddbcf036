"""`python -m jobqueue.sim`: run the simulator as a process of its own."""

from jobqueue.sim.server import main

if __name__ == "__main__":
    main()

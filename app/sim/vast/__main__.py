"""`python -m app.sim.vast --port P` = `comfyfleet sim vast --port P`."""

import typer

from app.sim.vast.cli import vast

if __name__ == "__main__":
    typer.run(vast)

"""Run the emulator: ``python -m api.wechat_emulator --host 127.0.0.1 --port 8090``."""

from __future__ import annotations

import argparse

import uvicorn

from api.wechat_emulator.app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the emulator with uvicorn until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m api.wechat_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()

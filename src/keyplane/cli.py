"""The ``keyplane`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from keyplane import config as config_mod
from keyplane.errors import KeyplaneError

EPILOG = """\
settings come from the TOML file, then environment variables, then these flags:
  [server]  host, port                 KEYPLANE_HOST, KEYPLANE_PORT
  [store]   data_dir                   KEYPLANE_DATA_DIR
  [service] account, region            KEYPLANE_ACCOUNT, KEYPLANE_REGION
  [logging] level, access_log          KEYPLANE_LOG_LEVEL, KEYPLANE_ACCESS_LOG
the root key is read from KEYPLANE_ROOT_KEY (base64 of 32 bytes) or from
<data_dir>/root.key, which is created with mode 0600 on first start.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keyplane",
        description="A local key management service that speaks the AWS KMS protocol.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", type=Path, help="a TOML configuration file")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 4599)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="where the store and root key live (default ./.keyplane)",
    )
    serve.add_argument("--account", help="the 12-digit account requests act as")
    serve.add_argument("--region", help="the region the service answers for")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)

    try:
        config = config_mod.load(
            args.config,
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            account=args.account,
            region=args.region,
            log_level=args.log_level,
        )
    except KeyplaneError as exc:
        print(f"keyplane: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not config.access_log:
        logging.getLogger("keyplane.access").setLevel(logging.WARNING)

    from keyplane import app

    def ready(running: app.Running) -> None:
        endpoint = f"http://{config.host}:{running.port}"
        print(
            f"keyplane listening on {endpoint} (account {config.account}, region "
            f"{config.region}, data in {config.data_dir})",
            flush=True,
        )
        print(
            f"try: aws kms create-key --endpoint-url {endpoint} --region "
            f"{config.region}",
            flush=True,
        )

    try:
        app.run(config, ready)
    except KeyplaneError as exc:
        print(f"keyplane: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

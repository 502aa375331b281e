"""The ``keyplane`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keyplane import config as config_mod
from keyplane.config import Config
from keyplane.errors import KeyplaneError

EPILOG = """\
settings come from the TOML file, then environment variables, then these flags:
  [server]  host, port                 KEYPLANE_HOST, KEYPLANE_PORT
  [store]   data_dir                   KEYPLANE_DATA_DIR
  [service] account, region            KEYPLANE_ACCOUNT, KEYPLANE_REGION
  [logging] level, access_log          KEYPLANE_LOG_LEVEL, KEYPLANE_ACCESS_LOG
  [auth]    mode ("sigv4" or "off")    KEYPLANE_AUTH
  [[accounts]] id, root_access_keys, [[accounts.principals]] (see docs/identities.md)
  [[clusters]] id, trust_anchor_file, kmsuser_password, hsm_count, ... and
  [custom_key_stores] request_quota, connect_seconds (see docs/origin-cloudhsm.md)
with no [[accounts]], keyplane runs in development mode: one account with an IAM user
"admin" allowed kms:*, whose access key is kept in <data_dir>/credentials (mode 0600,
AWS shared-credentials format, profile "keyplane") and printed at start.
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
    serve.add_argument(
        "--auth",
        choices=("sigv4", "off"),
        help="sigv4 (the default) checks every request's signature; off is for "
        "tests and benchmarks that measure what that costs",
    )
    serve.add_argument(
        "--write-aws-profile",
        metavar="NAME",
        help="in development mode, also write the admin access key into the AWS "
        "CLI's credentials file as profile NAME",
    )
    explain = commands.add_parser(
        "explain",
        help="ask a running server whether a principal may do an action, and why",
        description="Ask a running keyplane which key policy statement, identity "
        "policy statement or grant allows or denies a request, without making it. "
        "Signs with the AWS credentials the AWS CLI would use (--profile, the "
        "environment, ~/.aws/credentials). Exit status 0 when allowed, 3 when denied.",
    )
    explain.add_argument("--endpoint", default="http://127.0.0.1:4599")
    explain.add_argument("--region", default=config_mod.DEFAULT_REGION)
    explain.add_argument("--profile", help="the AWS credentials profile to sign with")
    explain.add_argument("--action", required=True, help="e.g. kms:Encrypt")
    explain.add_argument("--key", help="key id, key ARN, alias name or alias ARN")
    explain.add_argument("--principal", help="the principal ARN (default: yourself)")
    explain.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an encryption context pair (repeatable)",
    )
    _add_backup_commands(commands)
    _add_root_key_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "explain":
        return _explain(args)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args)
    if args.command == "root-key":
        return _rotate_root_key(args)

    try:
        config = config_mod.load(
            args.config,
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            account=args.account,
            region=args.region,
            log_level=args.log_level,
            auth=args.auth,
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
        for line in _welcome(config, endpoint, args.write_aws_profile):
            print(line, flush=True)

    try:
        app.run(config, ready)
    except KeyplaneError as exc:
        print(f"keyplane: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _explain(args: argparse.Namespace) -> int:
    import json

    import botocore.session

    from keyplane.client import BatchClient, BatchRequestError

    context = dict(pair.split("=", 1) for pair in args.context if "=" in pair)
    credentials = botocore.session.Session(profile=args.profile).get_credentials()
    try:
        with BatchClient(
            args.endpoint, region=args.region, credentials=credentials
        ) as client:
            answer = client.explain_access(
                args.action,
                key_id=args.key,
                principal=args.principal,
                encryption_context=context or None,
            )
    except (BatchRequestError, OSError, ValueError) as exc:
        print(f"keyplane: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0 if answer["Allowed"] else 3


BACKUP_EPILOG = """\
the backup holds the store only: key material in it stays wrapped under the root key,
which is not in the backup. keep the root key (<data_dir>/root.key or
KEYPLANE_ROOT_KEY) safe and apart from the backups: a backup cannot be restored
without it, and whoever holds both holds every key. see docs/reliability.md.
exit status: 0 done, 1 failed, 2 usage error or a file that would be overwritten.
"""


def _add_backup_commands(commands: argparse._SubParsersAction[Any]) -> None:
    backup = commands.add_parser(
        "backup",
        help="snapshot the store into a new file (also while a server runs)",
        description="Write a consistent snapshot of the store in the data directory\n"
        "to PATH, which must not exist, and check it. Works while a server is running\n"
        "on the data directory and taking writes; the store is not changed.",
        epilog=BACKUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backup.add_argument("path", metavar="PATH", type=Path, help="the backup to write")
    restore = commands.add_parser(
        "restore",
        help="put a backup in place as the store of a fresh data directory",
        description="Check the backup at PATH and copy it in as the store of the data\n"
        "directory, which must not have a store yet (it is created, mode 0700, if\n"
        "missing). No root key is restored: start the server with the root key the\n"
        "backup was made under.",
        epilog=BACKUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_argument("path", metavar="PATH", type=Path, help="the backup to read")
    for command in (backup, restore):
        command.add_argument("--config", type=Path, help="a TOML configuration file")
        command.add_argument(
            "--data-dir",
            type=Path,
            help="the data directory (default: the configured one, else ./.keyplane)",
        )


def _backup_or_restore(args: argparse.Namespace) -> int:
    """``keyplane backup`` and ``keyplane restore``: only counts and paths are
    printed, never anything read from the store's records."""
    from keyplane import backup
    from keyplane.errors import StoreConflictError
    from keyplane.storage import ROOT_KEY_ENV

    try:
        config = config_mod.load(args.config, data_dir=args.data_dir)
    except KeyplaneError as exc:
        print(f"keyplane: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "backup":
            summary = backup.backup(config.data_dir, args.path)
        else:
            summary = backup.restore(args.path, config.data_dir)
    except StoreConflictError as exc:
        # Refusing to overwrite is the caller's to fix, like a usage error.
        print(f"keyplane: {exc}", file=sys.stderr)
        return 2
    except KeyplaneError as exc:
        print(f"keyplane: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    counts = (
        f"  {summary.keys} keys ({summary.material_versions} key material versions), "
        f"{summary.aliases} aliases, {summary.grants} grants, "
        f"{summary.partitions} partitions"
    )
    root_key = f"{config.root_key_file} (or the {ROOT_KEY_ENV} variable)"
    if args.command == "backup":
        lines = [
            f"backed up {config.database} to {summary.path} "
            f"({summary.size_bytes} bytes, integrity check passed)",
            counts,
            "the backup does NOT contain the root key: its key material is wrapped "
            "under the root key and useless without it.",
            f"keep a copy of the root key, {root_key}, safe and apart from the "
            "backup; whoever holds both holds every key.",
        ]
    else:
        lines = [
            f"restored {args.path} into {summary.path} "
            f"({summary.size_bytes} bytes, integrity check passed)",
            counts,
            "no root key was restored: before starting the server, put the root key "
            f"the backup was made under in {config.root_key_file} (mode 0600) or in "
            f"{ROOT_KEY_ENV}.",
            "the server refuses to start under any other root key; started with none, "
            f"it creates a new {config.root_key_file.name} and then refuses, and that "
            "file must be replaced by the right one.",
        ]
    for line in lines:
        print(line)
    return 0


ROOT_KEY_EPILOG = """\
nothing but the partition keys' wrapping changes: every key, key material version,
ciphertext and data key made before keeps working, and a running server keeps serving
throughout. a stop at any moment leaves a data directory that starts and decrypts
everything. only a root key file can be rotated, not KEYPLANE_ROOT_KEY.
the old root key is gone afterwards: backups taken before the rotation open only under
it, so copy <data_dir>/root.key somewhere safe first if you keep such backups.
see docs/reliability.md.
exit status: 0 done, 1 failed.
"""


def _add_root_key_commands(commands: argparse._SubParsersAction[Any]) -> None:
    root_key = commands.add_parser(
        "root-key",
        help="manage the root key",
        description="Manage the root key that seals every partition key at rest.",
    )
    actions = root_key.add_subparsers(dest="root_key_command", required=True)
    rotate = actions.add_parser(
        "rotate",
        help="re-wrap every partition key under a new root key",
        description="Make a new root key and re-wrap every partition key under it.\n"
        "By default a running server does it (signed like `keyplane explain`, with\n"
        "the AWS credentials the AWS CLI would use; it needs keyplane:RotateRootKey).\n"
        "With --data-dir, it is done offline on the data directory of a stopped\n"
        "server, and refused while a server is using that directory.",
        epilog=ROOT_KEY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rotate.add_argument("--endpoint", default="http://127.0.0.1:4599")
    rotate.add_argument("--region", default=config_mod.DEFAULT_REGION)
    rotate.add_argument("--profile", help="the AWS credentials profile to sign with")
    rotate.add_argument(
        "--data-dir",
        type=Path,
        help="rotate offline, in this data directory of a stopped server",
    )


def _rotate_root_key(args: argparse.Namespace) -> int:
    """``keyplane root-key rotate``: only a count is printed, never a key."""
    import time

    started = time.perf_counter()
    if args.data_dir is not None:
        from keyplane import root_rotation

        try:
            config = config_mod.load(None, data_dir=args.data_dir)
            count = root_rotation.rotate_offline(config.root_key_file, config.database)
        except KeyplaneError as exc:
            print(f"keyplane: root key rotation failed: {exc}", file=sys.stderr)
            return 1
        where = str(config.root_key_file)
    else:
        import botocore.session

        from keyplane.client import BatchClient, BatchRequestError

        credentials = botocore.session.Session(profile=args.profile).get_credentials()
        try:
            with BatchClient(
                args.endpoint, region=args.region, credentials=credentials
            ) as client:
                # BatchClient has no method for this operation; its signed post is
                # the same for every keyplane operation.
                answer = client._post("RotateRootKey", {})
        except BatchRequestError as exc:
            print(f"keyplane: root key rotation failed: {exc}", file=sys.stderr)
            return 1
        except (OSError, ValueError) as exc:
            print(
                f"keyplane: cannot reach a server at {args.endpoint} ({exc}); start it,"
                " or rotate a stopped server's data directory with --data-dir",
                file=sys.stderr,
            )
            return 1
        count = int(answer["PartitionsRewrapped"])
        where = f"the server at {args.endpoint}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(
        f"rotated the root key of {where}: re-wrapped {count} partition keys in"
        f" {elapsed_ms:.0f} ms; no key, key material or ciphertext changed"
    )
    print("backups taken before now open only under the previous root key")
    return 0


def _welcome(config: Config, endpoint: str, profile: str | None) -> list[str]:
    """What a developer needs to make a first signed request."""
    if config.auth == "off":
        return [
            "WARNING: authentication is off: anyone who can reach the port can use "
            "every key",
            f"try: aws kms create-key --endpoint-url {endpoint} "
            f"--region {config.region}",
        ]
    if config.accounts:
        return [
            f"try: aws kms create-key --endpoint-url {endpoint} --region "
            f"{config.region} (with a configured access key)"
        ]
    from keyplane import identities

    key = identities.load_or_create_credentials(config.data_dir / "credentials")
    lines = [
        f"admin user: arn:aws:iam::{config.account}:user/{identities.ADMIN_NAME}",
        f"  access key id:     {key.id}",
        f"  secret access key: {key.secret}",
        f"  (kept in {config.data_dir / 'credentials'}, profile {identities.PROFILE})",
    ]
    if profile:
        path = identities.write_aws_profile(profile, key)
        lines.append(f"  written to {path} as profile {profile}")
        lines.append(
            f"try: aws kms create-key --profile {profile} --endpoint-url {endpoint} "
            f"--region {config.region}"
        )
    else:
        lines.append(
            f"try: AWS_SHARED_CREDENTIALS_FILE={config.data_dir / 'credentials'} "
            f"aws kms create-key --profile {identities.PROFILE} --endpoint-url "
            f"{endpoint} --region {config.region}"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
